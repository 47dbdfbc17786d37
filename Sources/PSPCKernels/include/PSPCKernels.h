#ifndef PSPC_KERNELS_H
#define PSPC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/// Number of training images processed side by side, one per vector lane.
#define PSPC_LANES 8

/// Lane-interleaved training tiles: tile k holds images 8k..8k+7 as
/// `tiles[(k * dimension + d) * PSPC_LANES + lane]`, d = c * H * W + y * W + x, uint8 pixel values.
/// Pixel value u maps to u / 127.5 - 1. Lanes past `count` are padding and never contribute.
typedef struct {
    const uint8_t *tiles;
    long count;      ///< number of real images
    int channels;
    int height;
    int width;
} pspc_image_tiles;

/// The CPU level whose kernels run: 0 baseline x86-64, 1 AVX2+FMA, 2 AVX-512 (env PSPC_KERNELS can lower it).
int pspc_kernel_level(void);
const char *pspc_kernel_level_name(void);

/// Forces the CPU level for every later kernel call (tests and benchmarks compare levels in one process):
/// `level` is lowered to the best the CPU has; returns the level now in force. Not for concurrent use with
/// running kernels of another level that must not change.
int pspc_set_kernel_level(int level);

/// Per-thread scratch size in doubles for the crop kernels below.
long pspc_crop_scratch_doubles(int channels, int height, int width, long crop_count);

/// Square crops of side `patch` at stride 1 (upper-left corner y0, x0 in 0..H-s, 0..W-s, row-major):
/// round 1 of the two-round PSPC scheme. For images [tile_begin, tile_end) * 8 of `set`, updates the
/// running log-sum-exp state of every crop with logits l_i(C) = -||z_C - x_i,C||^2 * inv_two_t2.
/// `m`, `s`: [crops][PSPC_LANES] per-lane running max and scaled sum (start at -inf, 0).
/// `z`: one query, [C, H, W] row-major, float64.
void pspc_square_normalizers(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                             int patch, double inv_two_t2, double *m, double *s, double *scratch);

/// Round 2: adds to `numerator` [C, H, W] the composite numerator
/// sum_i x_i(p) * sum_{C covers p} exp(l_i(C) - log_z[C]) over images [tile_begin, tile_end) * 8.
void pspc_square_composite(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                           int patch, double inv_two_t2, const double *log_z, double *numerator, double *scratch);

/// Arbitrary pixel masks (PSPC-Flex), as compressed rows: mask k covers pixel positions
/// `pixels[offsets[k] ..< offsets[k + 1]]` (p = y * W + x, all channels of each).
typedef struct {
    const long *offsets;   ///< [crop_count + 1]
    const int32_t *pixels;
    const double *multiplicity;  ///< [crop_count]: how many output pixels share this mask
    /// [crop_count]: 1 when mask k's row lists the positions it does NOT cover (its complement), which is
    /// shorter for masks over half the image: work per mask is min(|mask|, H W - |mask|).
    const uint8_t *complement;
    long crop_count;
} pspc_masks;

/// Round 1 for masks: same state layout as `pspc_square_normalizers`.
void pspc_mask_normalizers(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                           const pspc_masks *masks, double inv_two_t2, double *m, double *s, double *scratch);

/// Round 2 for masks: numerator(p) += sum_i x_i(p) * sum_{k covers p} multiplicity_k exp(l_i(k) - log_z[k]).
void pspc_mask_composite(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                         const pspc_masks *masks, double inv_two_t2, const double *log_z, double *numerator,
                         double *scratch);

/// Masks in row-run form (PSPC-Flex, docs/design.md section 2), built from the masks by `MaskSet`. For one
/// (query, training image) pair the kernels fill a table of 4 H W + 1 values: T[p] = e(p) for p = y W + x, the
/// per-pixel squared difference summed over channels; T[H W + y W + x] = e(y, 0) + ... + e(y, x), the inclusive
/// prefix sums of row y (each row starts from 0, so no entry exceeds one row's sum); T[2 H W + q] = -T[q] for
/// q < 2 H W; T[4 H W] = 0. Mask k's distance is the sum of T over entries[offsets[k] ..< offsets[k + 1]], an even
/// count added pair by pair: a run [x0, x1) of row y with x0 > 0 is the pair (prefix x1 - 1, negated prefix
/// x0 - 1), short runs read e. Each mask lists the entries of negative total first, so every partial sum at an
/// even position is a lower bound of the distance (the kernels stop once a mask is negligible in all 8 lanes).
/// Round 2 applies the transpose: each table entry q < 4 H W gathers the weights of the masks that read it,
/// `slot_masks[slot_offsets[q] ..< slot_offsets[q + 1]]` (a mask as often as it reads q), and pixel weights are
/// the e part plus the suffix sums of each row's prefix part (negated halves subtracted).
typedef struct {
    const long *offsets;        ///< [crop_count + 1], even differences
    const int32_t *entries;     ///< table indices, each in [0, 4 H W]
    const double *multiplicity; ///< [crop_count]
    long crop_count;
    const long *slot_offsets;   ///< [4 H W + 1]
    const int32_t *slot_masks;  ///< mask indices
} pspc_mask_runs;

/// Round 1 for row-run masks: same state layout and result as `pspc_mask_normalizers`.
void pspc_runs_normalizers(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                           const pspc_mask_runs *masks, double inv_two_t2, double *m, double *s, double *scratch);

/// Round 2 for row-run masks: same result as `pspc_mask_composite` (weights below e^-40 in all 8 lanes are
/// skipped, as round 1 skips terms e^-40 below the running maximum).
void pspc_runs_composite(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                         const pspc_mask_runs *masks, double inv_two_t2, const double *log_z, double *numerator,
                         double *scratch);

/// Converts images [first, first + count) of `set` to float64 rows `out[count][dimension]` (x / 127.5 - 1),
/// and writes their squared norms to `norms[count]` when `norms` is not NULL.
void pspc_tiles_to_rows(const pspc_image_tiles *set, long first, long count, double *out, double *norms);

/// One block of the streamed empirical softmax. `dots[b * ld + j]` holds z_b . x_j for j < cols; on return it
/// holds exp(l_bj - m_b) with l_bj = -max(qnorm_b + xnorm_j - 2 dots, 0) * inv_two_t2 and m_b the updated
/// running max. `scale[b]` receives exp(m_old - m_new), the factor the caller applies to its running
/// numerator; `s[b]` is updated in place (already rescaled).
void pspc_softmax_block(double *dots, long rows, long cols, long ld, const double *qnorm, const double *xnorm,
                        double inv_two_t2, double *m, double *s, double *scale);

/// Per-thread scratch size in doubles for `pspc_window_posterior`.
long pspc_window_scratch_doubles(int channels, int height, int width);

/// Kamb & Ganguli's LS (`equivariant` 0) and ELS (1) machines (docs/science.md): for every pixel p of the query
/// `z` [C, H, W], the softmax over candidate `patch` x `patch` training windows (zero-padded, so pixels outside the
/// image drop out of the distance) with logits -||z_win(p) - w||^2 * inv_two_t2, of the candidates' centre pixels.
/// LS: the windows at p of every image; ELS: the windows at every position with p's padding pattern. For images
/// [tile_begin, tile_end) * 8 of `set`, updates per-lane running state: `m`, `s` [H W][PSPC_LANES] (start at
/// -inf, 0) and `v` [H W][C][PSPC_LANES] (start at 0). Distances are sums of squared differences; candidates
/// whose logit is e^-40 below the running maximum in all 8 lanes are skipped, as in the crop kernels. With
/// `edges_only` (ELS) the interior pixels, which `pspc_els_interior` computes, are left alone.
void pspc_window_posterior(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z, int patch,
                           int equivariant, int edges_only, double inv_two_t2, double *m, double *s, double *v,
                           double *scratch);

/// ELS factor tables for 8 queries `z` [8][dim] (lane-major): for every query element e and pixel level u,
/// g[((e * 256) + u) * 8 + lane] = exp(-((z[lane][e] - x(u))^2 - nearest[e * 8 + lane]) * inv_two_t2), x(u) =
/// u / 127.5 - 1, where nearest[e * 8 + lane] = min_u (z[lane][e] - x(u))^2, so every factor is in (0, 1]. The
/// weight of a candidate window is the product of its elements' factors: exp(-(D - C) * inv_two_t2) with D the
/// squared distance and C the sum of `nearest` over the query window (libm exp, no approximation).
void pspc_els_tables(const double *z, long dim, double inv_two_t2, double *g, double *nearest);

/// Side of the square tiles of query pixels `pspc_els_interior` takes at a time.
int pspc_els_tile(int channels, int patch);

/// Per-thread scratch size in doubles for `pspc_els_interior`.
long pspc_els_scratch_doubles(int channels, int height, int width, int patch);

/// ELS for the interior pixels p (rows and columns at least patch / 2 from every edge) of 8 queries at once (vector
/// lanes are queries here), from their factor tables `g`: for training images [image_begin, image_end) of `set`,
/// adds to s[p][8] the sum over every interior window q of every image of the weight W(p, q) (the product of the
/// factors of the window's elements) and to v[p][C][8] the sums of W(p, q) x[c, q], and raises wmax[p][8] to the
/// largest weight (start s, v, wmax at 0). Each weight is a product of
/// pixel-pair factors shared by the windows that overlap: H = the factors of one query row against one training
/// row, R = products along the window's columns, W = products of R along the window's rows; no exp, no
/// distance sums. Query pixels go in square tiles (`pspc_els_tile`) so the tables of a tile and its halo stay in
/// cache while the images pass. Weights far below the table's reference underflow to 0; callers check the sums.
void pspc_els_interior(const pspc_image_tiles *set, long image_begin, long image_end, const double *g, int patch,
                       double *s, double *v, double *wmax, double *scratch);

/// Vector exp for testing the kernels' approximation: out[i] = exp(in[i]) for in[i] in [-708, 709].
void pspc_exp(const double *in, double *out, long n);

#endif
