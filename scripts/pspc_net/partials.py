"""The torch worker's arithmetic: every partial-sum operation of the pspc protocol over one shard's images, in
float64 on any torch device (docs/design.md section 10).

A shard's images stay on the device as uint8 levels u; a pixel's value is x = (2u - 255) / 255 (= u / 127.5 - 1).
Each operation answers what the Swift worker answers for the same shard (docs/design.md section 2): softmax
partials (m, s, v) with m the largest logit of a slot, s = sum exp(l - m), v = sum exp(l - m) value; the composite
numerators of PSPC round 2 (plain sums); the moments of the Gaussian baseline.

How distances are taken, so that float64 is float64 at every t:
- Per-pixel sums (square crops, PSPC-Flex masks, LS windows) start from e(p) = sum_c (z - x)^2, differences first,
  and add non-negative terms only (box sums by `avg_pool2d`, mask sums by a 0/1 matmul).
- Whole-image and ELS-window distances go through a matrix product (the fast path on a GPU) without the
  cancellation of ||z||^2 - 2 z.x + ||x||^2: in units of 1/255 the training values are the odd integers
  w = 2u - 255 (0 for zero padding), the query is zeta = 255 z, split as zeta = h + l with h on a grid of 2^-k
  chosen so that every partial sum of ||h||^2, h.w and ||w||^2 is a multiple of 2^-2k below 2^53. Those three are
  then exact in any summation order (a BLAS or cuBLAS product included), so ||h - w||^2 is exact, and the rest,
  2 l.(h - w) + ||l||^2 with |l| <= 2^-k-1, carries only the rounding of small terms.
- The moments are exact integers (sum u, sum u u^T) turned into float64 by one correctly rounded division, so any
  worker, Swift or torch, gives the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


from .heatmap import Cancelled  # raised between chunks of work once the request is cancelled


@dataclass
class Softmax:
    """Per-slot partials: m, s `[slots]`, v `[slots, value_length]` (float64, on the CPU)."""

    m: np.ndarray
    s: np.ndarray
    v: np.ndarray

    @property
    def value_length(self) -> int:
        return self.v.shape[1]

    def merged(self, other: "Softmax") -> "Softmax":
        """The merge of docs/design.md section 2 (the order of the Swift worker: self, then other)."""
        m1, m2 = self.m, other.m
        m = np.maximum(m1, m2)
        with np.errstate(invalid="ignore", over="ignore"):
            a = np.where(m1 == -np.inf, 0.0, np.exp(m1 - m))
            c = np.where(m2 == -np.inf, 0.0, np.exp(m2 - m))
        return Softmax(m, self.s * a + other.s * c, self.v * a[:, None] + other.v * c[:, None])


@dataclass
class Moments:
    count: int
    sum: np.ndarray
    outer: np.ndarray
    row_start: int

    def merged(self, other: "Moments") -> "Moments":
        return Moments(self.count + other.count, self.sum + other.sum, self.outer + other.outer, self.row_start)


def _merge(m, s, v, m2, s2, v2):
    """Online merge of torch partials: (m, s, v) and a chunk's (m2, s2, v2), slot-wise; v may be None."""
    mn = torch.maximum(m, m2)
    finite = mn != -math.inf
    safe = torch.where(finite, mn, torch.zeros_like(mn))
    a = torch.where(m == -math.inf, torch.zeros_like(m), torch.exp(m - safe))
    c = torch.where(m2 == -math.inf, torch.zeros_like(m2), torch.exp(m2 - safe))
    s = s * a + s2 * c
    if v is not None:
        v = v * a.unsqueeze(-1) + v2 * c.unsqueeze(-1)
    return mn, s, v


def _chunk_partials(logits: torch.Tensor):
    """Max over the last axis and the weights exp(l - max) (zero where the max is -inf), in place of the logits."""
    m = logits.amax(dim=-1)
    safe = torch.where(m == -math.inf, torch.zeros_like(m), m)
    return m, logits.sub_(safe.unsqueeze(-1)).exp_()


def split_grid_exponent(max_abs_zeta: float, terms: int) -> int:
    """k such that terms (max|zeta| + 255)^2 4^k <= 2^52: every partial sum of ||h||^2, h.w, ||w||^2 is then a
    multiple of 2^-2k below 2^53, exactly representable."""
    bound = terms * (max_abs_zeta + 255.0) ** 2
    return math.floor((52 - math.log2(bound)) / 2)


def window_logits(z_units: torch.Tensor, w: torch.Tensor, inv_two_t2: float, k: int) -> torch.Tensor:
    """Logits -||z - x||^2 / 2t^2 between query rows and training rows: `z_units` is 255 z `[S, J]`, `w` the
    training values 2u - 255 (0 for padding) `[n, J]`, both float64; returns `[S, n]`. Two products: the exact
    ||h - w||^2 = [h, ||h||^2, 1] . [-2w, 1, ||w||^2] (every partial sum a multiple of 2^-2k below 2^53, so any
    summation order gives it exactly), to which the small remainder [l, 2 l.h + ||l||^2] . [-2w, 1] is added.
    `k` is `split_grid_exponent` of the request's largest |255 z| (taken once per request: reading a value back
    from a GPU would stall the queue of kernels the chunks keep full)."""
    rows, terms = z_units.shape
    if terms == 0 or rows == 0 or w.shape[0] == 0:
        return torch.zeros(rows, w.shape[0], dtype=torch.float64, device=z_units.device)
    scale = 2.0**k
    h = torch.round(z_units * scale) / scale
    low = z_units - h
    one = torch.ones(rows, 1, dtype=torch.float64, device=z_units.device)
    left = torch.cat([h, (h * h).sum(1, keepdim=True), one], 1)
    right = torch.cat([-2 * w, torch.ones(w.shape[0], 1, dtype=torch.float64, device=w.device), (w * w).sum(1, keepdim=True)], 1)
    exact = left @ right.T
    rest_left = torch.cat([low, 2 * (low * h).sum(1, keepdim=True) + (low * low).sum(1, keepdim=True)], 1)
    distances = torch.addmm(exact, rest_left, right[:, : terms + 1].T)
    return distances.mul_(-inv_two_t2 / 65025.0)


class ShardImages:
    """One shard's training images on `device`, uint8 `[n, C, H, W]` (x-flipped copies appended after the
    originals when `xflip`, as the Swift worker does), and every operation over them.

    `budget_bytes` bounds the float64 temporaries of one chunk of images; `cancelled()` is polled between chunks.
    """

    def __init__(self, pixels: np.ndarray, xflip: bool, device: torch.device, budget_bytes: int = 256 << 20):
        images = torch.from_numpy(np.ascontiguousarray(pixels))
        if xflip:
            images = torch.cat([images, images.flip(-1)])
        self.u = images.to(device)
        self.device = torch.device(device)
        self.count, self.channels, self.height, self.width = (int(d) for d in self.u.shape)
        self.budget_bytes = budget_bytes

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def dimension(self) -> int:
        return self.channels * self.pixels

    def _values(self, lo: int, hi: int) -> torch.Tensor:
        return (self.u[lo:hi].to(torch.float64) * 2 - 255) / 255

    def _chunks(self, doubles_per_image: int, cancelled):
        """Ranges of images whose temporaries (`doubles_per_image` float64 each) fit the budget."""
        step = max(1, self.budget_bytes // max(1, 8 * doubles_per_image))
        for lo in range(0, self.count, step):
            if cancelled():
                raise Cancelled()
            yield lo, min(self.count, lo + step)

    def _queries(self, queries: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float64)).to(self.device)

    # MARK: empirical

    def empirical(self, queries: np.ndarray, t: float, cancelled=lambda: False) -> Softmax:
        b, dim = queries.shape[0], self.dimension
        z = self._queries(queries).reshape(b, dim)
        m = torch.full((b,), -math.inf, dtype=torch.float64, device=self.device)
        s = torch.zeros(b, dtype=torch.float64, device=self.device)
        v = torch.zeros(b, dim, dtype=torch.float64, device=self.device)
        inv = 1 / (2 * t * t)
        zu = z * 255
        k = split_grid_exponent(float(np.abs(queries).max()) * 255, dim)
        for lo, hi in self._chunks(4 * b + 3 * dim, cancelled):
            w = self.u[lo:hi].reshape(hi - lo, dim).to(torch.float64) * 2 - 255
            logits = window_logits(zu, w, inv, k)
            m2, weights = _chunk_partials(logits)
            m, s, v = _merge(m, s, v, m2, weights.sum(1), weights @ (w / 255))
        return _host(m, s, v)

    # MARK: PSPC crops

    def _e_maps(self, z: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """e(p) = sum_c (z - x)^2 for every query and image of the chunk, `[B, n, H, W]`."""
        x = self._values(lo, hi)
        return ((z.unsqueeze(1) - x.unsqueeze(0)) ** 2).sum(2)

    def _crop_distances(self, e: torch.Tensor, crops) -> torch.Tensor:
        """Per query, image and crop the crop's squared distance, `[B, n, K]`."""
        b, n = e.shape[:2]
        if crops.kind == "square":
            size = crops.patch_size
            boxes = F.avg_pool2d(e.reshape(b * n, 1, self.height, self.width), size, stride=1, divisor_override=1)
            return boxes.reshape(b, n, -1)
        return e.reshape(b, n, self.pixels) @ crops.dense(self.device).T

    def crop_normalizers(self, queries: np.ndarray, t: float, crops, cancelled=lambda: False) -> Softmax:
        b, k = queries.shape[0], crops.count(self.height, self.width)
        z = self._queries(queries)
        m = torch.full((b, k), -math.inf, dtype=torch.float64, device=self.device)
        s = torch.zeros(b, k, dtype=torch.float64, device=self.device)
        inv = 1 / (2 * t * t)
        for lo, hi in self._chunks(b * (4 * self.dimension + 3 * k), cancelled):
            logits = -self._crop_distances(self._e_maps(z, lo, hi), crops) * inv  # [B, n, K]
            m2, weights = _chunk_partials(logits.transpose(1, 2))
            m, s, _ = _merge(m, s, None, m2, weights.sum(-1), None)
        return _host(m.reshape(-1), s.reshape(-1), torch.zeros(b * k, 0, dtype=torch.float64))

    def crop_composite(
        self, queries: np.ndarray, t: float, crops, log_z: np.ndarray, cancelled=lambda: False
    ) -> np.ndarray:
        b, k = queries.shape[0], crops.count(self.height, self.width)
        z = self._queries(queries)
        lz = torch.from_numpy(np.ascontiguousarray(log_z, dtype=np.float64)).to(self.device).reshape(b, 1, k)
        empty = lz == -math.inf
        lz = torch.where(empty, torch.zeros_like(lz), lz)
        inv = 1 / (2 * t * t)
        numerator = torch.zeros(b, self.channels, self.pixels, dtype=torch.float64, device=self.device)
        for lo, hi in self._chunks(b * (5 * self.dimension + 3 * k), cancelled):
            n = hi - lo
            logits = -self._crop_distances(self._e_maps(z, lo, hi), crops) * inv
            weights = torch.where(empty, torch.zeros_like(logits), torch.exp(logits - lz))  # [B, n, K]
            if crops.kind == "square":
                size, rows, cols = crops.patch_size, self.height - crops.patch_size + 1, self.width - crops.patch_size + 1
                grid = F.pad(weights.reshape(b * n, 1, rows, cols), (size - 1,) * 4)
                per_pixel = F.avg_pool2d(grid, size, stride=1, divisor_override=1).reshape(b, n, self.pixels)
            else:
                per_pixel = (weights * crops.multiplicity_tensor(self.device)) @ crops.dense(self.device)
            x = self._values(lo, hi).reshape(n, self.channels, self.pixels)
            numerator += torch.einsum("bnp,ncp->bcp", per_pixel, x)
        return numerator.reshape(-1).cpu().numpy()

    # MARK: LS / ELS

    def window_posterior(
        self, queries: np.ndarray, t: float, patch_size: int, equivariant: bool, cancelled=lambda: False
    ) -> Softmax:
        if equivariant:
            return self._els(queries, t, patch_size, cancelled)
        return self._ls(queries, t, patch_size, cancelled)

    def _ls(self, queries, t, patch_size, cancelled) -> Softmax:
        b, c, hw, r = queries.shape[0], self.channels, self.pixels, patch_size // 2
        z = self._queries(queries)
        m = torch.full((b, hw), -math.inf, dtype=torch.float64, device=self.device)
        s = torch.zeros(b, hw, dtype=torch.float64, device=self.device)
        v = torch.zeros(b, hw, c, dtype=torch.float64, device=self.device)
        inv = 1 / (2 * t * t)
        for lo, hi in self._chunks(b * (4 * self.dimension + 3 * hw), cancelled):
            n = hi - lo
            e = self._e_maps(z, lo, hi).reshape(b * n, 1, self.height, self.width)
            window = F.avg_pool2d(e, patch_size, stride=1, padding=r, count_include_pad=True, divisor_override=1)
            logits = -window.reshape(b, n, hw).transpose(1, 2) * inv  # [B, HW, n]
            m2, weights = _chunk_partials(logits)
            x = self._values(lo, hi).reshape(n, c, hw)
            values = torch.einsum("bpn,ncp->bpc", weights, x)
            m, s, v = _merge(m, s, v, m2, weights.sum(-1), values)
        return _host(m.reshape(-1), s.reshape(-1), v.reshape(b * hw, c))

    def padding_classes(self, patch_size: int) -> list[torch.Tensor]:
        """The pixels p = y W + x grouped by their window's padding pattern (min(y, r), min(H-1-y, r)) x
        (min(x, r), min(W-1-x, r)): ELS's candidate positions for any pixel of a group are the group's pixels."""
        r = patch_size // 2
        groups: dict[tuple, list[int]] = {}
        for y in range(self.height):
            for x in range(self.width):
                key = (min(y, r), min(self.height - 1 - y, r), min(x, r), min(self.width - 1 - x, r))
                groups.setdefault(key, []).append(y * self.width + x)
        return [torch.tensor(p, dtype=torch.long, device=self.device) for p in groups.values()]

    def _els(self, queries, t, patch_size, cancelled) -> Softmax:
        b, c, hw, r = queries.shape[0], self.channels, self.pixels, patch_size // 2
        terms = c * patch_size * patch_size
        z = self._queries(queries)
        zw = F.unfold(z * 255, patch_size, padding=r)  # [B, J, HW]
        k = split_grid_exponent(float(np.abs(queries).max()) * 255, terms)
        m = torch.full((b, hw), -math.inf, dtype=torch.float64, device=self.device)
        s = torch.zeros(b, hw, dtype=torch.float64, device=self.device)
        v = torch.zeros(b, hw, c, dtype=torch.float64, device=self.device)
        inv = 1 / (2 * t * t)
        for group in self.padding_classes(patch_size):
            g = group.numel()
            rows = zw[:, :, group].transpose(1, 2).reshape(b * g, terms)  # slots (query, pixel of the group)
            gm = torch.full((b * g,), -math.inf, dtype=torch.float64, device=self.device)
            gs = torch.zeros(b * g, dtype=torch.float64, device=self.device)
            gv = torch.zeros(b * g, c, dtype=torch.float64, device=self.device)
            for lo, hi in self._chunks(g * (4 * b * g + 2 * terms + c), cancelled):
                n = hi - lo
                w = self.u[lo:hi].to(torch.float64) * 2 - 255
                windows = F.unfold(w, patch_size, padding=r)[:, :, group]  # [n, J, g]; padding reads 0 (x = 0)
                candidates = windows.transpose(1, 2).reshape(n * g, terms)
                centres = (w.reshape(n, c, hw)[:, :, group].transpose(1, 2).reshape(n * g, c)) / 255
                logits = window_logits(rows, candidates, inv, k)  # [B g, n g]
                m2, weights = _chunk_partials(logits)
                gm, gs, gv = _merge(gm, gs, gv, m2, weights.sum(1), weights @ centres)
            m[:, group] = gm.reshape(b, g)
            s[:, group] = gs.reshape(b, g)
            v[:, group] = gv.reshape(b, g, c)
        return _host(m.reshape(-1), s.reshape(-1), v.reshape(b * hw, c))

    # MARK: moments

    def moments(self, row_start: int, row_count: int) -> Moments:
        """count, sum x and rows [row_start, row_start + row_count) of sum x x^T, from exact integer sums:
        x_a x_b = (4 u_a u_b - 510 u_a - 510 u_b + 65025) / 65025, so sum x_a x_b is one correctly rounded quotient
        of integers (exact in float64 below 2^53: fewer than 3.4e10 images)."""
        dim, n = self.dimension, self.count
        total_u = torch.zeros(dim, dtype=torch.float64, device=self.device)
        products = torch.zeros(row_count, dim, dtype=torch.float64, device=self.device)
        for lo, hi in self._chunks(2 * dim, lambda: False):
            u = self.u[lo:hi].reshape(hi - lo, dim).to(torch.float64)
            total_u += u.sum(0)
            products += u[:, row_start : row_start + row_count].T @ u
        rows = total_u[row_start : row_start + row_count]
        numerator = 4 * products - 510 * rows.unsqueeze(1) - 510 * total_u.unsqueeze(0) + 65025.0 * n
        outer = numerator / 65025.0
        total = (2 * total_u - 255.0 * n) / 255.0
        return Moments(n, total.cpu().numpy(), outer.cpu().numpy(), row_start)


def _host(m, s, v) -> Softmax:
    return Softmax(m.cpu().numpy(), s.cpu().numpy(), v.cpu().numpy())


@dataclass
class Crops:
    """A CropSpec: every `patch_size` square, or masks as compressed rows with multiplicities."""

    kind: str
    patch_size: int = 0
    offsets: np.ndarray | None = None
    pixels: np.ndarray | None = None
    multiplicity: np.ndarray | None = None
    pixel_count: int = 0
    _dense: dict | None = None

    def count(self, height: int, width: int) -> int:
        if self.kind == "square":
            return (height - self.patch_size + 1) * (width - self.patch_size + 1)
        return len(self.multiplicity)

    def dense(self, device) -> torch.Tensor:
        """The masks as a 0/1 float64 matrix `[K, H W]` (a position listed twice counts twice)."""
        key = str(device)
        if self._dense is None:
            self._dense = {}
        if key not in self._dense:
            k = len(self.multiplicity)
            matrix = np.zeros((k, self.pixel_count), dtype=np.float64)
            rows = np.repeat(np.arange(k), np.diff(self.offsets))
            np.add.at(matrix, (rows, self.pixels), 1.0)
            self._dense[key] = torch.from_numpy(matrix).to(device)
        return self._dense[key]

    def multiplicity_tensor(self, device) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.multiplicity, dtype=np.float64)).to(device)
