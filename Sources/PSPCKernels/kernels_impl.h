#include "PSPCKernels.h"

#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

// Body of the float64 vector kernels, included once per CPU level by kernels_<level>.c, which defines
// PSPC_VARIANT to name the functions of that level; dispatch.c picks a level at run time. Not public.
//
// One training image per vector lane, so every per-pixel and per-crop operation is element-wise over
// 8 images and needs no shuffles.
//
// Precision: distances are sums of squared differences in float64 (no ||z||^2 - 2 z.x expansion), so
// at t = 0.002, where logits are ~1e6 apart, they keep ~1e-13 absolute accuracy; box sums use float64
// summed-area tables; the softmax subtracts the running max before exp.

typedef double vd __attribute__((vector_size(64)));
typedef long long vl __attribute__((vector_size(64)));
typedef uint8_t vu8 __attribute__((vector_size(8)));

static const double kPixelScale = 1.0 / 127.5;

static inline vd splat(double x) { return (vd){x, x, x, x, x, x, x, x}; }
static inline vd load(const double *p) {
    vd v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void store(double *p, vd v) { memcpy(p, &v, sizeof v); }
static inline vd select_vd(vl mask, vd a, vd b) { return (vd)(((vl)a & mask) | ((vl)b & ~mask)); }
static inline vd vmax(vd a, vd b) { return select_vd(a > b, a, b); }
static inline double hsum(vd v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/// Training pixels of one tile at flat index d, mapped to [-1, 1].
static inline vd load_pixels(const uint8_t *tile, long d) {
    vu8 u;
    memcpy(&u, tile + d * PSPC_LANES, sizeof u);
    return __builtin_convertvector(u, vd) * splat(kPixelScale) - splat(1.0);
}

/// exp(x) to ~1e-11 relative for x in [-708, 709]; 0 for x < -708, -inf and NaN.
/// Cody-Waite reduction x = n ln2 + r, |r| <= ln2 / 2, the Taylor series to degree 9 (remainder
/// r^10 / 10! < 7e-12, far below what a posterior weight needs) evaluated by Estrin's scheme (short
/// dependency chains), then scaling by 2^n through the exponent bits.
static inline vd vexp(vd x) {
    const vd shifter = splat(6755399441055744.0);  // 1.5 * 2^52: adding it rounds to an integer
    vl ok = x > splat(-708.0);
    vd xc = select_vd(ok, x, splat(0.0));
    vd n = (xc * splat(1.4426950408889634) + shifter) - shifter;
    vd r = xc - n * splat(6.93147180369123816490e-01);
    r = r - n * splat(1.90821492927058770002e-10);
    vd r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    vd p01 = splat(1.0) + r;
    vd p23 = splat(1.0 / 2) + r * splat(1.0 / 6);
    vd p45 = splat(1.0 / 24) + r * splat(1.0 / 120);
    vd p67 = splat(1.0 / 720) + r * splat(1.0 / 5040);
    vd p89 = splat(1.0 / 40320) + r * splat(1.0 / 362880);
    vd p = (p01 + r2 * p23) + r4 * (p45 + r2 * p67) + r8 * p89;
    vl bits = (__builtin_convertvector(n, vl) + 1023) << 52;
    return select_vd(ok, p * (vd)bits, splat(0.0));
}

/// Terms more than this far below the running maximum (or log Z) weigh less than e^-40 ~ 4e-18 relative to a
/// sum that is at least 1; when all 8 lanes are that far below, the exp is skipped.
#define PSPC_NEGLIGIBLE 40.0

static inline int all_lanes(vl mask) { return __builtin_reduce_and(mask) != 0; }

static inline double *align64(double *p) { return (double *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

static inline vl lane_mask(const pspc_image_tiles *set, long tile) {
    long long n = set->count - tile * PSPC_LANES;
    vl lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    return lanes < (vl){n, n, n, n, n, n, n, n};
}

/// e[p] = sum_c (z[c, p] - x[c, p])^2 for the 8 images of one tile.
static inline void pixel_sqdist(const pspc_image_tiles *set, const uint8_t *tile, const double *z, vd *e) {
    long hw = (long)set->height * set->width;
    for (int c = 0; c < set->channels; c++) {
        const double *zc = z + c * hw;
        long base = c * hw;
        for (long p = 0; p < hw; p++) {
            vd diff = splat(zc[p]) - load_pixels(tile, base + p);
            e[p] = (c == 0 ? splat(0.0) : e[p]) + diff * diff;
        }
    }
}

/// Completes a summed-area table whose rows hold column sums: sat[(y + 1) * (W + 1) + x + 1] becomes the sum
/// over [0, y] x [0, x]. Taken column by column so the inner loop's additions are independent.
static inline void sat_finish_rows(vd *sat, int rows, int cols) {
    int w1 = cols + 1;
    for (int x = 2; x <= cols; x++) {
        for (int y = 1; y <= rows; y++) sat[y * w1 + x] += sat[y * w1 + x - 1];
    }
}

/// Summed-area table of e[p] = sum_c (z[c, p] - x[c, p])^2 over the 8 images of one tile, with e computed
/// on the fly: sat[(y + 1) * (W + 1) + x + 1] = sum of e over [0, y] x [0, x]; row and column 0 are 0.
static inline void sqdist_sat(const pspc_image_tiles *set, const uint8_t *tile, const double *z, vd *sat) {
    int rows = set->height, cols = set->width, w1 = cols + 1;
    long hw = (long)rows * cols;
    for (int x = 0; x <= cols; x++) sat[x] = splat(0.0);
    for (int y = 0; y < rows; y++) {
        sat[(y + 1) * w1] = splat(0.0);
        for (int x = 0; x < cols; x++) {
            long p = (long)y * cols + x;
            vd e = splat(0.0);
            for (int c = 0; c < set->channels; c++) {
                vd diff = splat(z[c * hw + p]) - load_pixels(tile, c * hw + p);
                e += diff * diff;
            }
            sat[(y + 1) * w1 + x + 1] = sat[y * w1 + x + 1] + e;
        }
    }
    sat_finish_rows(sat, rows, cols);
}

static inline vd sat_rect(const vd *sat, int w1, int y0, int x0, int y1, int x1) {
    // Sum over rows [y0, y1) and columns [x0, x1).
    return (sat[y1 * w1 + x1] - sat[y0 * w1 + x1]) - (sat[y1 * w1 + x0] - sat[y0 * w1 + x0]);
}

/// Logit of square crop (y0, x0) for the 8 images whose summed-area table is `sat`; padded lanes get -inf.
static inline vd square_logit(const vd *sat, int w1, int y0, int x0, int patch, vd k, vl valid) {
    vd d = sat_rect(sat, w1, y0, x0, y0 + patch, x0 + patch);
    d = select_vd(d > splat(0.0), d, splat(0.0));
    return select_vd(valid, d * k, splat(-INFINITY));
}

/// One online log-sum-exp step of per-lane state (m, s) with logits l: one exp per element. Returns the factor
/// the smaller of (m, l) is scaled by and, in `greater`, the lanes where l is the new maximum.
static inline vd lse_step(double *mp, double *sp, vd l, vl *greater) {
    vd m = load(mp), s = load(sp);
    *greater = l > m;
    vd m_new = select_vd(*greater, l, m);
    vd lower = select_vd(*greater, m, l);
    vd a = vexp(lower - m_new);  // -inf - x and -inf - -inf (NaN) both give 0
    store(mp, m_new);
    store(sp, select_vd(*greater, s * a + splat(1.0), s + a));
    return a;
}

/// Online log-sum-exp update of per-lane state (m, s) with logits l.
static inline void lse_update(double *mp, double *sp, vd l) {
    vl greater;
    (void)lse_step(mp, sp, l, &greater);
}

typedef struct {
    vd *e, *sat, *logits, *wsat, *weight, *acc;
} scratch_layout;

static scratch_layout carve(double *scratch, const pspc_image_tiles *set, long crop_count) {
    long hw = (long)set->height * set->width;
    long sat = (long)(set->height + 1) * (set->width + 1);
    vd *base = (vd *)align64(scratch);
    scratch_layout l;
    l.e = base;
    l.sat = l.e + hw;
    l.logits = l.sat + sat;
    l.wsat = l.logits + crop_count;
    l.weight = l.wsat + sat;
    l.acc = l.weight + hw;
    return l;
}

void PSPC_VARIANT(pspc_square_normalizers)(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                             int patch, double inv_two_t2, double *m, double *s, double *scratch) {
    int gy = set->height - patch + 1, gx = set->width - patch + 1, w1 = set->width + 1;
    long crops = (long)gy * gx;
    long dim = (long)set->channels * set->height * set->width;
    scratch_layout w = carve(scratch, set, crops);
    vd k = splat(-inv_two_t2);
    for (long t = tile_begin; t < tile_end; t++) {
        const uint8_t *tile = set->tiles + t * dim * PSPC_LANES;
        vl valid = lane_mask(set, t);
        sqdist_sat(set, tile, z, w.sat);
        for (int y0 = 0; y0 < gy; y0++) {
            for (int x0 = 0; x0 < gx; x0++) {
                long c = (long)y0 * gx + x0;
                vd l = square_logit(w.sat, w1, y0, x0, patch, k, valid);
                if (all_lanes(l < load(m + c * PSPC_LANES) - splat(PSPC_NEGLIGIBLE))) continue;
                lse_update(m + c * PSPC_LANES, s + c * PSPC_LANES, l);
            }
        }
    }
}

/// numerator[d] += sum over lanes of acc[d]; acc is cleared for the next call.
static inline void flush_numerator(vd *acc, long dim, double *numerator) {
    for (long d = 0; d < dim; d++) numerator[d] += hsum(acc[d]);
}

/// acc[c, p] += weight[p] * x[c, p] for one tile.
static inline void accumulate(const pspc_image_tiles *set, const uint8_t *tile, const vd *weight, vd *acc) {
    long hw = (long)set->height * set->width;
    for (int c = 0; c < set->channels; c++) {
        long base = c * hw;
        for (long p = 0; p < hw; p++) acc[base + p] += weight[p] * load_pixels(tile, base + p);
    }
}

void PSPC_VARIANT(pspc_square_composite)(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                           int patch, double inv_two_t2, const double *log_z, double *numerator, double *scratch) {
    int rows = set->height, cols = set->width, w1 = cols + 1;
    int gy = rows - patch + 1, gx = cols - patch + 1, g1 = gx + 1;
    long crops = (long)gy * gx, hw = (long)rows * cols;
    long dim = (long)set->channels * hw;
    scratch_layout w = carve(scratch, set, crops);
    vd k = splat(-inv_two_t2);
    for (long d = 0; d < dim; d++) w.acc[d] = splat(0.0);
    for (long t = tile_begin; t < tile_end; t++) {
        const uint8_t *tile = set->tiles + t * dim * PSPC_LANES;
        vl valid = lane_mask(set, t);
        sqdist_sat(set, tile, z, w.sat);
        // Crop weights exp(l - log Z_C), summed straight into the column sums of their own SAT.
        for (int x0 = 0; x0 <= gx; x0++) w.wsat[x0] = splat(0.0);
        for (int y0 = 0; y0 < gy; y0++) {
            w.wsat[(y0 + 1) * g1] = splat(0.0);
            for (int x0 = 0; x0 < gx; x0++) {
                vd l = square_logit(w.sat, w1, y0, x0, patch, k, valid);
                vd arg = l - splat(log_z[(long)y0 * gx + x0]);
                vd weight = all_lanes(arg < splat(-PSPC_NEGLIGIBLE)) ? splat(0.0) : vexp(arg);
                w.wsat[(y0 + 1) * g1 + x0 + 1] = w.wsat[y0 * g1 + x0 + 1] + weight;
            }
        }
        sat_finish_rows(w.wsat, gy, gx);
        // Weight reaching pixel (y, x): the crops covering it form a rectangle of the crop grid.
        for (int y = 0; y < rows; y++) {
            int ya = y - patch + 1 > 0 ? y - patch + 1 : 0, yb = y < gy - 1 ? y : gy - 1;
            for (int x = 0; x < cols; x++) {
                int xa = x - patch + 1 > 0 ? x - patch + 1 : 0, xb = x < gx - 1 ? x : gx - 1;
                vd weight = sat_rect(w.wsat, g1, ya, xa, yb + 1, xb + 1);
                long p = (long)y * cols + x;
                for (int c = 0; c < set->channels; c++) w.acc[c * hw + p] += weight * load_pixels(tile, c * hw + p);
            }
        }
    }
    flush_numerator(w.acc, dim, numerator);
}

static inline void mask_logits(const pspc_image_tiles *set, const uint8_t *tile, vl valid, const double *z,
                               const pspc_masks *masks, double inv_two_t2, vd *e, vd *logits) {
    pixel_sqdist(set, tile, z, e);
    vd ninf = splat(-INFINITY), k = splat(-inv_two_t2);
    long hw = (long)set->height * set->width;
    vd t0 = splat(0.0), t1 = t0, t2 = t0, t3 = t0;
    long q = 0;
    for (; q + 4 <= hw; q += 4) {
        t0 += e[q];
        t1 += e[q + 1];
        t2 += e[q + 2];
        t3 += e[q + 3];
    }
    for (; q < hw; q++) t0 += e[q];
    vd total = (t0 + t1) + (t2 + t3);
    for (long c = 0; c < masks->crop_count; c++) {
        // Four independent sums: one chain would wait on the adder's latency at every pixel.
        vd d0 = splat(0.0), d1 = d0, d2 = d0, d3 = d0;
        long j = masks->offsets[c], end = masks->offsets[c + 1];
        for (; j + 4 <= end; j += 4) {
            d0 += e[masks->pixels[j]];
            d1 += e[masks->pixels[j + 1]];
            d2 += e[masks->pixels[j + 2]];
            d3 += e[masks->pixels[j + 3]];
        }
        for (; j < end; j++) d0 += e[masks->pixels[j]];
        vd d = (d0 + d1) + (d2 + d3);
        // A complemented row: the mask's distance is the whole image's less the uncovered part (clamped: the
        // difference of two sums may round just below zero).
        if (masks->complement[c]) d = vmax(total - d, splat(0.0));
        logits[c] = select_vd(valid, d * k, ninf);
    }
}

void PSPC_VARIANT(pspc_mask_normalizers)(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                           const pspc_masks *masks, double inv_two_t2, double *m, double *s, double *scratch) {
    long dim = (long)set->channels * set->height * set->width;
    scratch_layout w = carve(scratch, set, masks->crop_count);
    for (long t = tile_begin; t < tile_end; t++) {
        const uint8_t *tile = set->tiles + t * dim * PSPC_LANES;
        mask_logits(set, tile, lane_mask(set, t), z, masks, inv_two_t2, w.e, w.logits);
        for (long k = 0; k < masks->crop_count; k++)
            lse_update(m + k * PSPC_LANES, s + k * PSPC_LANES, w.logits[k]);
    }
}

void PSPC_VARIANT(pspc_mask_composite)(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                         const pspc_masks *masks, double inv_two_t2, const double *log_z, double *numerator,
                         double *scratch) {
    long hw = (long)set->height * set->width;
    long dim = set->channels * hw;
    scratch_layout w = carve(scratch, set, masks->crop_count);
    for (long d = 0; d < dim; d++) w.acc[d] = splat(0.0);
    for (long t = tile_begin; t < tile_end; t++) {
        const uint8_t *tile = set->tiles + t * dim * PSPC_LANES;
        mask_logits(set, tile, lane_mask(set, t), z, masks, inv_two_t2, w.e, w.logits);
        for (long p = 0; p < hw; p++) w.weight[p] = splat(0.0);
        // Complemented masks add their weight everywhere (`everywhere`) and take it back where they do not reach.
        vd everywhere = splat(0.0);
        for (long c = 0; c < masks->crop_count; c++) {
            vd wk = vexp(w.logits[c] - splat(log_z[c])) * splat(masks->multiplicity[c]);
            if (masks->complement[c]) {
                everywhere += wk;
                for (long j = masks->offsets[c]; j < masks->offsets[c + 1]; j++) w.weight[masks->pixels[j]] -= wk;
            } else {
                for (long j = masks->offsets[c]; j < masks->offsets[c + 1]; j++) w.weight[masks->pixels[j]] += wk;
            }
        }
        for (long p = 0; p < hw; p++) w.weight[p] += everywhere;
        accumulate(set, tile, w.weight, w.acc);
    }
    flush_numerator(w.acc, dim, numerator);
}

// MARK: - Row-run masks (pspc_mask_runs in PSPCKernels.h)

/// The row-run table of one tile (layout in PSPCKernels.h): e, the inclusive row prefix sums of e, both negated,
/// then a zero. Rows start from 0, so an entry is at most one row's distance and a run's difference of two
/// entries carries only the rounding of the additions inside the run.
static inline void runs_table(const pspc_image_tiles *set, const uint8_t *tile, const double *z, vd *table) {
    int rows = set->height, cols = set->width;
    long hw = (long)rows * cols;
    pixel_sqdist(set, tile, z, table);
    vd *prefix = table + hw;
    for (int y = 0; y < rows; y++) prefix[(long)y * cols] = table[(long)y * cols];
    // Column by column, so the additions of different rows are independent.
    for (int x = 1; x < cols; x++) {
        for (int y = 0; y < rows; y++) {
            long p = (long)y * cols + x;
            prefix[p] = prefix[p - 1] + table[p];
        }
    }
    for (long q = 0; q < 2 * hw; q++) table[2 * hw + q] = -table[q];
    table[4 * hw] = splat(0.0);
}

/// Mask distance: the sum of the table entries `entries[j ..< end]` (an even count; consecutive pairs are added
/// first, so a run's two prefix entries meet before anything else). The entries are ordered so that what follows
/// any even position adds up to at least 0: the partial sum is a lower bound, and once it exceeds `limit` in all
/// 8 lanes the mask's weight is negligible there and this returns 0 (no distance). Else it stores the distance,
/// clamped at 0, in `out` and returns 1.
static inline int runs_distance(const vd *table, const int32_t *e, long j, long end, vd limit, vd *out) {
    // Independent sums: one chain would wait on the adder's latency at every entry.
    vd d0 = splat(0.0), d1 = d0, d2 = d0, d3 = d0;
    for (; j + 16 <= end; j += 16) {
        d0 += table[e[j]] + table[e[j + 1]];
        d1 += table[e[j + 2]] + table[e[j + 3]];
        d2 += table[e[j + 4]] + table[e[j + 5]];
        d3 += table[e[j + 6]] + table[e[j + 7]];
        d0 += table[e[j + 8]] + table[e[j + 9]];
        d1 += table[e[j + 10]] + table[e[j + 11]];
        d2 += table[e[j + 12]] + table[e[j + 13]];
        d3 += table[e[j + 14]] + table[e[j + 15]];
        if (all_lanes(((d0 + d1) + (d2 + d3)) > limit)) return 0;
    }
    for (; j + 4 <= end; j += 4) {
        d0 += table[e[j]] + table[e[j + 1]];
        d1 += table[e[j + 2]] + table[e[j + 3]];
    }
    if (j < end) d2 += table[e[j]] + table[e[j + 1]];
    *out = vmax((d0 + d1) + (d2 + d3), splat(0.0));
    return 1;
}

void PSPC_VARIANT(pspc_runs_normalizers)(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                           const pspc_mask_runs *masks, double inv_two_t2, double *m, double *s, double *scratch) {
    long dim = (long)set->channels * set->height * set->width;
    vd *table = (vd *)align64(scratch);
    vd k = splat(-inv_two_t2), ninf = splat(-INFINITY), two_t2 = splat(1.0 / inv_two_t2);
    for (long t = tile_begin; t < tile_end; t++) {
        const uint8_t *tile = set->tiles + t * dim * PSPC_LANES;
        vl valid = lane_mask(set, t);
        runs_table(set, tile, z, table);
        for (long c = 0; c < masks->crop_count; c++) {
            double *mc = m + c * PSPC_LANES, *sc = s + c * PSPC_LANES;
            // Logit below m - 40 <=> distance above (40 - m) 2t^2; padded lanes never hold a mask back.
            vd limit = select_vd(valid, (splat(PSPC_NEGLIGIBLE) - load(mc)) * two_t2, ninf);
            vd d;
            if (!runs_distance(table, masks->entries, masks->offsets[c], masks->offsets[c + 1], limit, &d)) continue;
            vd l = select_vd(valid, d * k, ninf);
            if (all_lanes(l < load(mc) - splat(PSPC_NEGLIGIBLE))) continue;
            lse_update(mc, sc, l);
        }
    }
}

/// Sum of weight[readers[j]] for j in [j, end), in four independent chains.
static inline vd gather_weights(const vd *weight, const int32_t *readers, long j, long end) {
    vd w0 = splat(0.0), w1 = w0, w2 = w0, w3 = w0;
    for (; j + 4 <= end; j += 4) {
        w0 += weight[readers[j]];
        w1 += weight[readers[j + 1]];
        w2 += weight[readers[j + 2]];
        w3 += weight[readers[j + 3]];
    }
    for (; j < end; j++) w0 += weight[readers[j]];
    return (w0 + w1) + (w2 + w3);
}

void PSPC_VARIANT(pspc_runs_composite)(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                         const pspc_mask_runs *masks, double inv_two_t2, const double *log_z, double *numerator,
                         double *scratch) {
    int rows = set->height, cols = set->width;
    long hw = (long)rows * cols;
    long dim = set->channels * hw;
    long crops = masks->crop_count;
    // table [4 H W + 1] | mask weights [crops] | pixel and prefix weights [2 H W] | numerator [C H W].
    vd *table = (vd *)align64(scratch);
    vd *weight = table + 4 * hw + 1;
    vd *spread = weight + crops;
    vd *acc = spread + 2 * hw;
    vd k = splat(-inv_two_t2), ninf = splat(-INFINITY);
    double two_t2 = 1.0 / inv_two_t2;
    const int32_t *e = masks->entries, *readers = masks->slot_masks;
    const long *slots = masks->slot_offsets;
    for (long d = 0; d < dim; d++) acc[d] = splat(0.0);
    for (long t = tile_begin; t < tile_end; t++) {
        const uint8_t *tile = set->tiles + t * dim * PSPC_LANES;
        vl valid = lane_mask(set, t);
        runs_table(set, tile, z, table);
        long live = 0;
        for (long c = 0; c < crops; c++) {
            weight[c] = splat(0.0);
            // Weight below e^-40 <=> distance above (40 - log Z) 2t^2.
            vd d;
            if (!runs_distance(table, e, masks->offsets[c], masks->offsets[c + 1],
                               splat((PSPC_NEGLIGIBLE - log_z[c]) * two_t2), &d))
                continue;
            vd arg = select_vd(valid, d * k, ninf) - splat(log_z[c]);
            if (all_lanes(arg < splat(-PSPC_NEGLIGIBLE))) continue;
            weight[c] = vexp(arg) * splat(masks->multiplicity[c]);
            live++;
        }
        if (live == 0) continue;
        // The transpose of the distance: each table entry gathers the weights of the masks that read it, the
        // negated half subtracted.
        for (long q = 0; q < 2 * hw; q++) spread[q] = gather_weights(weight, readers, slots[q], slots[q + 1]) -
                                                    gather_weights(weight, readers, slots[2 * hw + q], slots[2 * hw + q + 1]);
        // Prefix entry (y, x) holds e(y, 0..x), so pixel (y, x) receives the weights of prefix entries x..W-1 of
        // its row.
        vd *prefix = spread + hw;
        for (int x = cols - 2; x >= 0; x--) {
            for (int y = 0; y < rows; y++) {
                long p = (long)y * cols + x;
                prefix[p] += prefix[p + 1];
            }
        }
        for (long p = 0; p < hw; p++) spread[p] += prefix[p];
        accumulate(set, tile, spread, acc);
    }
    flush_numerator(acc, dim, numerator);
}

void PSPC_VARIANT(pspc_tiles_to_rows)(const pspc_image_tiles *set, long first, long count, double *out, double *norms) {
    long dim = (long)set->channels * set->height * set->width;
    for (long i = 0; i < count; i++) {
        long image = first + i;
        const uint8_t *src = set->tiles + (image / PSPC_LANES) * dim * PSPC_LANES + image % PSPC_LANES;
        double *row = out + i * dim;
        double norm = 0.0;
        for (long d = 0; d < dim; d++) {
            double x = (double)src[d * PSPC_LANES] * kPixelScale - 1.0;
            row[d] = x;
            norm += x * x;
        }
        if (norms) norms[i] = norm;
    }
}

void PSPC_VARIANT(pspc_softmax_block)(double *dots, long rows, long cols, long ld, const double *qnorm, const double *xnorm,
                        double inv_two_t2, double *m, double *s, double *scale) {
    for (long b = 0; b < rows; b++) {
        double *row = dots + b * ld;
        double qn = qnorm[b];
        double row_max = -INFINITY;
        for (long j = 0; j < cols; j++) {
            double d = qn + xnorm[j] - 2.0 * row[j];
            double l = -(d > 0.0 ? d : 0.0) * inv_two_t2;
            row[j] = l;
            row_max = l > row_max ? l : row_max;
        }
        double m_new = row_max > m[b] ? row_max : m[b];
        double factor = m[b] == -INFINITY ? 0.0 : exp(m[b] - m_new);
        vd acc = splat(0.0);
        long j = 0;
        for (; j + PSPC_LANES <= cols; j += PSPC_LANES) {
            vd w = vexp(load(row + j) - splat(m_new));
            store(row + j, w);
            acc += w;
        }
        double sum = hsum(acc);
        for (; j < cols; j++) {
            row[j] = exp(row[j] - m_new);
            sum += row[j];
        }
        s[b] = s[b] * factor + sum;
        m[b] = m_new;
        scale[b] = factor;
    }
}

void PSPC_VARIANT(pspc_exp)(const double *in, double *out, long n) {
    long i = 0;
    for (; i + PSPC_LANES <= n; i += PSPC_LANES) store(out + i, vexp(load(in + i)));
    for (; i < n; i++) {
        double tail[PSPC_LANES] = {in[i]};
        vd v = vexp(load(tail));
        out[i] = v[0];
    }
}

// MARK: - Window posteriors (LS and ELS machines, pspc_window_posterior in PSPCKernels.h)

/// Online log-sum-exp update of per-lane (m, s, v) with logits l and values x[c * stride] for each channel.
static inline void lse_update_value(double *mp, double *sp, double *vp, int channels, vd l, const vd *x, long stride) {
    vl greater;
    vd a = lse_step(mp, sp, l, &greater);
    for (int c = 0; c < channels; c++) {
        vd v = load(vp + c * PSPC_LANES), xc = x[c * stride];
        store(vp + c * PSPC_LANES, select_vd(greater, v * a + xc, v + a * xc));
    }
}

/// Candidate rows (or columns) of a pixel at y of an image of `n` rows with window half-width r: the interior
/// class [r, n - r) for an interior pixel, else y alone (an edge pixel's padding pattern is its own).
static inline void window_class(int y, int n, int r, int *lo, int *hi) {
    if (y >= r && y < n - r) {
        *lo = r;
        *hi = n - r;
    } else {
        *lo = y;
        *hi = y + 1;
    }
}

void PSPC_VARIANT(pspc_window_posterior)(const pspc_image_tiles *set, long tile_begin, long tile_end, const double *z,
                                         int patch, int equivariant, int edges_only, double inv_two_t2, double *m,
                                         double *s, double *v, double *scratch) {
    int rows = set->height, cols = set->width, channels = set->channels, r = patch / 2;
    long hw = (long)rows * cols, dim = channels * hw;
    // Tile pixels [C H W] | per-pixel distances e [H W] | row box sums of e [H W] | a pixel's candidate logits
    // [H W] | their positions [H W] | value sums [C].
    vd *x = (vd *)align64(scratch);
    vd *e = x + dim, *h = e + hw, *logits = h + hw;
    int32_t *where = (int32_t *)(logits + hw);
    vd *v_add = (vd *)(where + hw + (hw & 15 ? 16 - (hw & 15) : 0));
    vd k = splat(-inv_two_t2), ninf = splat(-INFINITY), two_t2 = splat(1.0 / inv_two_t2);
    for (long t = tile_begin; t < tile_end; t++) {
        const uint8_t *tile = set->tiles + t * dim * PSPC_LANES;
        vl valid = lane_mask(set, t);
        for (long d = 0; d < dim; d++) x[d] = load_pixels(tile, d);
        if (!equivariant) {
            // LS: the window at p against the training window at p is a box sum of e over the clipped window,
            // taken as direct sums of non-negative terms (row sums, then column sums of those): no cancellation.
            pixel_sqdist(set, tile, z, e);
            for (int y = 0; y < rows; y++) {
                for (int xx = 0; xx < cols; xx++) {
                    int a = xx - r > 0 ? xx - r : 0, b = xx + r < cols - 1 ? xx + r : cols - 1;
                    vd sum = splat(0.0);
                    for (int j = a; j <= b; j++) sum += e[(long)y * cols + j];
                    h[(long)y * cols + xx] = sum;
                }
            }
            for (int y = 0; y < rows; y++) {
                int a = y - r > 0 ? y - r : 0, b = y + r < rows - 1 ? y + r : rows - 1;
                for (int xx = 0; xx < cols; xx++) {
                    long p = (long)y * cols + xx;
                    vd sum = splat(0.0);
                    for (int i = a; i <= b; i++) sum += h[(long)i * cols + xx];
                    vd l = select_vd(valid, sum * k, ninf);
                    double *mp = m + p * PSPC_LANES;
                    if (all_lanes(l < load(mp) - splat(PSPC_NEGLIGIBLE))) continue;
                    lse_update_value(mp, s + p * PSPC_LANES, v + p * channels * PSPC_LANES, channels, l, x + p, hw);
                }
            }
            continue;
        }
        // ELS: every candidate position q of p's class, distances from exact differences in registers, in two
        // passes per pixel: the logits of the tile's candidates and their maximum, then one exp per candidate
        // against that maximum (no per-candidate rescaling) and one merge into the running state. Each window
        // row adds non-negative terms, so the partial sum bounds the distance from below: once it passes
        // (40 - m) 2t^2 in all 8 lanes (m the larger of the running and the tile's maximum) the candidate's weight
        // is below e^-40 relative and it is dropped.
        for (int y = 0; y < rows; y++) {
            int qy0, qy1;
            window_class(y, rows, r, &qy0, &qy1);
            int dy0 = -r > -y ? -r : -y, dy1 = r < rows - 1 - y ? r : rows - 1 - y;
            for (int xx = 0; xx < cols; xx++) {
                if (edges_only && y >= r && y < rows - r && xx >= r && xx < cols - r) continue;
                int qx0, qx1;
                window_class(xx, cols, r, &qx0, &qx1);
                int dx0 = -r > -xx ? -r : -xx, dx1 = r < cols - 1 - xx ? r : cols - 1 - xx;
                long p = (long)y * cols + xx;
                double *mp = m + p * PSPC_LANES, *sp = s + p * PSPC_LANES, *vp = v + p * channels * PSPC_LANES;
                vd m_old = load(mp), top = ninf;
                long n = 0;
                for (int qy = qy0; qy < qy1; qy++) {
                    for (int qx = qx0; qx < qx1; qx++) {
                        vd limit = select_vd(valid, (splat(PSPC_NEGLIGIBLE) - vmax(m_old, top)) * two_t2, ninf);
                        vd d0 = splat(0.0), d1 = d0;
                        int dropped = 0;
                        for (int c = 0; c < channels && !dropped; c++) {
                            for (int dy = dy0; dy <= dy1; dy++) {
                                const double *zr = z + c * hw + (long)(y + dy) * cols + xx;
                                const vd *xr = x + c * hw + (long)(qy + dy) * cols + qx;
                                int dx = dx0;
                                for (; dx + 1 <= dx1; dx += 2) {
                                    vd a = splat(zr[dx]) - xr[dx], b = splat(zr[dx + 1]) - xr[dx + 1];
                                    d0 += a * a;
                                    d1 += b * b;
                                }
                                if (dx <= dx1) {
                                    vd a = splat(zr[dx]) - xr[dx];
                                    d0 += a * a;
                                }
                                if (all_lanes(d0 + d1 > limit)) {
                                    dropped = 1;
                                    break;
                                }
                            }
                        }
                        if (dropped) continue;
                        vd l = select_vd(valid, (d0 + d1) * k, ninf);
                        logits[n] = l;
                        where[n] = qy * cols + qx;
                        n++;
                        top = vmax(top, l);
                    }
                }
                if (n == 0) continue;
                vd m_new = vmax(m_old, top);
                vd s_add = splat(0.0);
                for (int c = 0; c < channels; c++) v_add[c] = splat(0.0);
                for (long j = 0; j < n; j++) {
                    vd arg = logits[j] - m_new;  // -inf - -inf (NaN, a padded lane) gives weight 0
                    if (all_lanes(arg < splat(-PSPC_NEGLIGIBLE))) continue;
                    vd weight = vexp(arg);
                    s_add += weight;
                    for (int c = 0; c < channels; c++) v_add[c] += weight * x[c * hw + where[j]];
                }
                vd scale = vexp(m_old - m_new);  // 0 where the state was empty
                store(mp, m_new);
                store(sp, load(sp) * scale + s_add);
                for (int c = 0; c < channels; c++)
                    store(vp + c * PSPC_LANES, load(vp + c * PSPC_LANES) * scale + v_add[c]);
            }
        }
    }
}

// MARK: - ELS interior by factor tables (pspc_els_interior in PSPCKernels.h)

/// One vector of 8 query lanes from the table of query pixel `e` (flat c * H * W + y * W + x) at level u.
static inline vd els_factor(const double *g, long e, int u) { return load(g + ((e << 8) + u) * PSPC_LANES); }

/// The body of pspc_els_interior, inlined for the common window sides so their products unroll.
static inline __attribute__((always_inline)) void els_interior(const pspc_image_tiles *set, long image_begin,
                                                               long image_end, const double *g, const int patch,
                                                               int tile, double *s, double *v, double *wmax,
                                                               double *scratch) {
    int rows = set->height, cols = set->width, channels = set->channels, r = patch / 2;
    long hw = (long)rows * cols, dim = (long)channels * hw;
    int lo = r, hi_y = rows - r, hi_x = cols - r;  // interior rows [lo, hi_y), columns [lo, hi_x)
    if (hi_y <= lo || hi_x <= lo) return;
    int ni = hi_x - lo;  // interior columns (candidate columns)
    int th = tile + 2 * r;  // query columns of a tile with its halo
    long block = (long)tile * ni;
    // Scratch: H [tile + 2r][W] | ring of `patch` R blocks [tile][ni] (vectors); pixel levels [C][W] and
    // centre values [C][ni] of one training row. At most 4 channels (callers check).
    vd *hb = (vd *)align64(scratch);
    vd *ring = hb + (long)th * cols;
    double *centre = (double *)(ring + (long)patch * block);
    int *levels = (int *)(centre + (long)channels * ni);
    // Query tiles of tile x tile interior pixels: the tables of a tile and its halo stay in cache while every
    // image passes.
    for (int ty = lo; ty < hi_y; ty += tile) {
        int ty1 = ty + tile < hi_y ? ty + tile : hi_y;
        for (int tx = lo; tx < hi_x; tx += tile) {
            int tx1 = tx + tile < hi_x ? tx + tile : hi_x, tw = tx1 - tx;
            for (long i = image_begin; i < image_end; i++) {
                const uint8_t *tile_px = set->tiles + (i / PSPC_LANES) * dim * PSPC_LANES + (i % PSPC_LANES);
#define PIXEL(c, yy, xx) ((int)tile_px[((long)(c) * hw + (long)(yy) * cols + (xx)) * PSPC_LANES])
                // Candidate rows y' = y + dy for query rows y of the tile, both interior; the window rows
                // a = y + k - r hold the training rows b = a + dy.
                for (int dy = lo - (hi_y - 1); dy <= (hi_y - 1) - lo; dy++) {
                    int y0 = ty > lo - dy ? ty : lo - dy, y1 = ty1 < hi_y - dy ? ty1 : hi_y - dy;
                    if (y1 <= y0) continue;
                    for (int a = y0 - r; a < y1 + r; a++) {
                        int b = a + dy;
                        // H[x][x'] = prod_c g(query pixel (c, a, x), training level at (c, b, x')) for the tile's
                        // columns and halo x in [tx - r, tx1 + r) and every training column x'.
                        for (int c = 0; c < channels; c++)
                            for (int xx = 0; xx < cols; xx++) levels[c * cols + xx] = PIXEL(c, b, xx);
                        for (int xq = tx - r; xq < tx1 + r; xq++) {
                            vd *hrow = hb + (long)(xq - (tx - r)) * cols;
                            long e0 = (long)a * cols + xq;
                            for (int xt = 0; xt < cols; xt++) hrow[xt] = els_factor(g, e0, levels[xt]);
                            for (int c = 1; c < channels; c++) {
                                long e = (long)c * hw + e0;
                                for (int xt = 0; xt < cols; xt++) hrow[xt] *= els_factor(g, e, levels[c * cols + xt]);
                            }
                        }
                        // R_a[x][x'] = prod over the window's columns k of H[x + k - r][x' + k - r].
                        vd *ra = ring + (long)((a - (y0 - r)) % patch) * block;
                        for (int xq = tx; xq < tx1; xq++) {
                            vd *out = ra + (long)(xq - tx) * ni;
                            const vd *h0 = hb + (long)(xq - tx) * cols + (lo - r);
                            for (int j = 0; j < ni; j++) {
                                vd prod = h0[j];
                                for (int k = 1; k < patch; k++) prod *= h0[(long)k * (cols + 1) + j];
                                out[j] = prod;
                            }
                        }
                        int y = a - r;  // the query row whose window ends at row a
                        if (y < y0) continue;
                        // W[x][x'] = prod over the window's rows of R, summed at once over the candidates of row
                        // y + dy: s += W, v += W x_c, wmax = max(wmax, W).
                        const vd *rk[patch];
                        for (int k = 0; k < patch; k++) rk[k] = ring + (long)((y - y0 + k) % patch) * block;
                        for (int c = 0; c < channels; c++)
                            for (int j = 0; j < ni; j++)
                                centre[c * ni + j] = PIXEL(c, y + dy, lo + j) * kPixelScale - 1.0;
                        for (int xq = 0; xq < tw; xq++) {
                            long p = (long)y * cols + tx + xq, row = (long)xq * ni;
                            vd sum = splat(0.0), top = load(wmax + p * PSPC_LANES);
                            vd acc[4] = {splat(0.0), splat(0.0), splat(0.0), splat(0.0)};
                            for (int j = 0; j < ni; j++) {
                                vd w = rk[0][row + j];
                                for (int k = 1; k < patch; k++) w *= rk[k][row + j];
                                sum += w;
                                top = vmax(top, w);
                                for (int c = 0; c < channels && c < 4; c++) acc[c] += w * splat(centre[c * ni + j]);
                            }
                            store(s + p * PSPC_LANES, load(s + p * PSPC_LANES) + sum);
                            store(wmax + p * PSPC_LANES, top);
                            for (int c = 0; c < channels; c++) {
                                double *vp = v + (p * channels + c) * PSPC_LANES;
                                store(vp, load(vp) + acc[c]);
                            }
                        }
                    }
                }
#undef PIXEL
            }
        }
    }
}

void PSPC_VARIANT(pspc_els_interior)(const pspc_image_tiles *set, long image_begin, long image_end, const double *g,
                                     int patch, int tile, double *s, double *v, double *wmax, double *scratch) {
    switch (patch) {
    case 3: els_interior(set, image_begin, image_end, g, 3, tile, s, v, wmax, scratch); break;
    case 5: els_interior(set, image_begin, image_end, g, 5, tile, s, v, wmax, scratch); break;
    case 7: els_interior(set, image_begin, image_end, g, 7, tile, s, v, wmax, scratch); break;
    default: els_interior(set, image_begin, image_end, g, patch, tile, s, v, wmax, scratch); break;
    }
}
