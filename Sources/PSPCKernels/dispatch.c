// Picks the kernels for the CPU this runs on, once: AVX-512, else AVX2 with FMA, else baseline x86-64.
// PSPC_KERNELS=baseline|avx2|avx512 forces a level (a level the CPU lacks falls back to the best it has),
// which lets the tests check that every level gives the same answers.
#include "PSPCKernels.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define DECLARE(level)                                                                                        \
    void pspc_square_normalizers_##level(const pspc_image_tiles *, long, long, const double *, int, double,    \
                                         double *, double *, double *);                                        \
    void pspc_square_composite_##level(const pspc_image_tiles *, long, long, const double *, int, double,      \
                                       const double *, double *, double *);                                    \
    void pspc_mask_normalizers_##level(const pspc_image_tiles *, long, long, const double *, const pspc_masks *, \
                                       double, double *, double *, double *);                                  \
    void pspc_mask_composite_##level(const pspc_image_tiles *, long, long, const double *, const pspc_masks *,   \
                                     double, const double *, double *, double *);                              \
    void pspc_runs_normalizers_##level(const pspc_image_tiles *, long, long, const double *,                   \
                                       const pspc_mask_runs *, double, double *, double *, double *);          \
    void pspc_runs_composite_##level(const pspc_image_tiles *, long, long, const double *,                     \
                                     const pspc_mask_runs *, double, const double *, double *, double *);      \
    void pspc_tiles_to_rows_##level(const pspc_image_tiles *, long, long, double *, double *);                 \
    void pspc_softmax_block_##level(double *, long, long, long, const double *, const double *, double,        \
                                    double *, double *, double *);                                             \
    void pspc_exp_##level(const double *, double *, long);                                                    \
    void pspc_window_posterior_##level(const pspc_image_tiles *, long, long, const double *, int, int, int,    \
                                       double, double *, double *, double *, double *);                        \
    void pspc_els_interior_##level(const pspc_image_tiles *, long, long, const double *, int, int, double *,     \
                                   double *, double *, double *);

DECLARE(baseline)
#if defined(__x86_64__)
DECLARE(avx2)
DECLARE(avx512)
#endif

static _Atomic int chosen_level = -1;

static int best_supported(void) {
    int best = 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = 1;
    if (best == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) best = 2;
#endif
    return best;
}

static int detect_level(void) {
    int best = best_supported();
    const char *forced = getenv("PSPC_KERNELS");
    if (forced) {
        int want = !strcmp(forced, "baseline") ? 0 : !strcmp(forced, "avx2") ? 1 : !strcmp(forced, "avx512") ? 2 : best;
        if (want < best) best = want;
    }
    return best;
}

int pspc_kernel_level(void) {
    int level = atomic_load_explicit(&chosen_level, memory_order_relaxed);
    if (level < 0) {
        level = detect_level();
        atomic_store_explicit(&chosen_level, level, memory_order_relaxed);
    }
    return level;
}

int pspc_set_kernel_level(int level) {
    int best = best_supported();
    if (level < 0) level = 0;
    if (level > best) level = best;
    atomic_store_explicit(&chosen_level, level, memory_order_relaxed);
    return level;
}

const char *pspc_kernel_level_name(void) {
    static const char *names[] = {"baseline x86-64", "avx2+fma", "avx512"};
    return names[pspc_kernel_level()];
}

#if defined(__x86_64__)
#define DISPATCH(name, ...)                                     \
    switch (pspc_kernel_level()) {                              \
    case 2: name##_avx512(__VA_ARGS__); break;                  \
    case 1: name##_avx2(__VA_ARGS__); break;                    \
    default: name##_baseline(__VA_ARGS__); break;               \
    }
#else
#define DISPATCH(name, ...) name##_baseline(__VA_ARGS__);
#endif

long pspc_crop_scratch_doubles(int channels, int height, int width, long crop_count) {
    long hw = (long)height * width;
    long sat = (long)(height + 1) * (width + 1);
    long vectors = hw + sat + crop_count + sat + hw + (long)channels * hw;
    // The row-run kernels: their table, the mask weights, pixel and prefix weights and a numerator.
    long runs = (4 * hw + 1) + crop_count + 2 * hw + (long)channels * hw;
    if (runs > vectors) vectors = runs;
    return vectors * PSPC_LANES + PSPC_LANES;
}

void pspc_square_normalizers(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                             int patch, double inv_two_t2, double *m, double *s, double *scratch) {
    DISPATCH(pspc_square_normalizers, set, tile_begin, tile_end, z, patch, inv_two_t2, m, s, scratch)
}

void pspc_square_composite(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                           int patch, double inv_two_t2, const double *log_z, double *numerator, double *scratch) {
    DISPATCH(pspc_square_composite, set, tile_begin, tile_end, z, patch, inv_two_t2, log_z, numerator, scratch)
}

void pspc_mask_normalizers(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                           const pspc_masks *masks, double inv_two_t2, double *m, double *s, double *scratch) {
    DISPATCH(pspc_mask_normalizers, set, tile_begin, tile_end, z, masks, inv_two_t2, m, s, scratch)
}

void pspc_mask_composite(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                         const pspc_masks *masks, double inv_two_t2, const double *log_z, double *numerator,
                         double *scratch) {
    DISPATCH(pspc_mask_composite, set, tile_begin, tile_end, z, masks, inv_two_t2, log_z, numerator, scratch)
}

void pspc_runs_normalizers(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                           const pspc_mask_runs *masks, double inv_two_t2, double *m, double *s, double *scratch) {
    DISPATCH(pspc_runs_normalizers, set, tile_begin, tile_end, z, masks, inv_two_t2, m, s, scratch)
}

void pspc_runs_composite(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                         const pspc_mask_runs *masks, double inv_two_t2, const double *log_z, double *numerator,
                         double *scratch) {
    DISPATCH(pspc_runs_composite, set, tile_begin, tile_end, z, masks, inv_two_t2, log_z, numerator, scratch)
}

void pspc_tiles_to_rows(const pspc_image_tiles *set, long first, long count, double *out, double *norms) {
    DISPATCH(pspc_tiles_to_rows, set, first, count, out, norms)
}

void pspc_softmax_block(double *dots, long rows, long cols, long ld, const double *qnorm, const double *xnorm,
                        double inv_two_t2, double *m, double *s, double *scale) {
    DISPATCH(pspc_softmax_block, dots, rows, cols, ld, qnorm, xnorm, inv_two_t2, m, s, scale)
}

void pspc_exp(const double *in, double *out, long n) { DISPATCH(pspc_exp, in, out, n) }

long pspc_window_scratch_doubles(int channels, int height, int width) {
    long hw = (long)height * width;
    // Tile, e, row sums, candidate logits (vectors), candidate positions (int32, padded to whole vectors),
    // value sums.
    return ((long)channels * hw + 3 * hw + (hw + 15) / 16 + channels) * PSPC_LANES + PSPC_LANES;
}

void pspc_window_posterior(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z, int patch,
                           int equivariant, int edges_only, double inv_two_t2, double *m, double *s, double *v,
                           double *scratch) {
    DISPATCH(pspc_window_posterior, set, tile_begin, tile_end, z, patch, equivariant, edges_only, inv_two_t2, m, s, v,
             scratch)
}

void pspc_els_tables(const double *z, long dim, double inv_two_t2, double *g, double *nearest) {
    for (long e = 0; e < dim; e++) {
        for (int lane = 0; lane < PSPC_LANES; lane++) {
            double q = z[lane * dim + e], best = INFINITY;
            double d2[256];
            for (int u = 0; u < 256; u++) {
                double d = q - (u * (1.0 / 127.5) - 1.0);
                d2[u] = d * d;
                if (d2[u] < best) best = d2[u];
            }
            for (int u = 0; u < 256; u++) g[((e << 8) + u) * PSPC_LANES + lane] = exp(-(d2[u] - best) * inv_two_t2);
            nearest[e * PSPC_LANES + lane] = best;
        }
    }
}

int pspc_els_tile(int channels, int patch) {
    // The factor tables of a tile and its halo, (tile + 2r)^2 query pixels x C x 16 KiB, within about 2 MiB (the
    // fastest of 1, 2, 4 and 16 MiB at 1x28x28, P = 3, on a 1 MiB-L2, 32 MiB-L3 EPYC).
    int r = patch / 2, tile = 1;
    while ((long)(tile + 1 + 2 * r) * (tile + 1 + 2 * r) * channels * 16 <= 2048) tile++;
    return tile;
}

long pspc_els_scratch_doubles(int channels, int height, int width, int patch) {
    long ni = width - 2 * (patch / 2);
    if (ni < 0) ni = 0;
    long tile = pspc_els_tile(channels, patch);
    long vectors = (tile + 2 * (patch / 2)) * width + (long)(patch + 1) * tile * ni;
    return vectors * PSPC_LANES + (long)channels * ni + ((long)channels * width + 1) / 2 + 2 * PSPC_LANES;
}

void pspc_els_interior(const pspc_image_tiles *set, long image_begin, long image_end, const double *g, int patch,
                       double *s, double *v, double *wmax, double *scratch) {
    int tile = pspc_els_tile(set->channels, patch);
    DISPATCH(pspc_els_interior, set, image_begin, image_end, g, patch, tile, s, v, wmax, scratch)
}
