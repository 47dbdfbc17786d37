"""Gradient-sensitivity heatmaps of a denoiser and their locality figure (docs/science.md section 4).

G(y, x, t)[y', x'] = E_{x0, eps} sum_c sum_c' | dD(z, t)[c, y, x] / dz[c', y', x'] |, z = x0 + t eps:
for each output pixel (y, x) an H x W map over input pixels, summed over output and over all input
channels (docs/science.md leaves cross-channel terms open; we include them), averaged over the samples.
Maps are `[H, W, H, W]` float64 row-major, `maps[y, x, y', x']` (output pixel first, p = y W + x), as
FlexMasks in Swift reads them; they are not normalised.

The Jacobian is exact: reverse mode, one vector-Jacobian product per output element, batched over
output elements with `torch.func.vmap` (the network's batch items are independent, so one product
gives every sample's row at once). `method="replicate"` computes the same numbers with plain autograd
on a batch replicated once per output element, for networks `torch.func` cannot transform ("auto"
falls back to it).

Ranges of output pixels: `outputs=(start, count)` computes only the output pixels p in [start, start +
count), i.e. the Jacobian rows k = c H W + p of every output channel c, and answers `[count, H, W]`; a
map too large for one frame is fetched in ranges. The rows are grouped into passes by absolute pixel
blocks (block j: pixels [j P, (j + 1) P), all channels), the same blocks whatever the range, and a range
computes the whole blocks it touches, so every number is bit for bit the one the full map holds. The
samples are drawn before the range is used (`draw_samples` does not see it).

Locality: for each output pixel, the side s = 2r + 1 of the smallest square centred on it whose part
inside the image holds at least a fraction q of the map's mass (q = 0.5, 0.75, 0.95), so s is odd, 1
at the least and 2 max(H, W) - 1 at the most (a corner pixel whose map covers the whole image); a map
without mass has side 1. The figure is the mean of s over all output pixels, one value per q.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

LOCALITY_FRACTIONS = (0.5, 0.75, 0.95)
# Noise is drawn in blocks of this many samples, so a seed gives the same draws whatever the batch size.
DRAW_BLOCK = 64
# Relative slack on "mass >= q * total", so hand-made maps with exact fractions land on the intended side.
_MASS_SLACK = 1e-12


class Cancelled(Exception):
    """The request was cancelled while its heatmap was being computed."""


def draw_samples(
    images: torch.Tensor, t: float, samples: int, seed: int, xflip: bool = False, in_order: bool = False
) -> Iterator[torch.Tensor]:
    """z = x0 + t eps in blocks of at most DRAW_BLOCK, float32 `[k, C, H, W]` on the CPU.

    x0 = images[i] / 127.5 - 1 with i uniform over the N images (over 2N with `xflip`, the second N
    being the horizontally flipped copies). All indices are drawn first, then eps block by block, from
    one CPU generator seeded with `seed`. With `in_order`, sample i takes images[i] as it is (the caller
    drew them; N must equal `samples`, `xflip` must be off) and only eps is drawn.
    """
    n = images.shape[0] * (2 if xflip else 1)
    g = torch.Generator().manual_seed(int(seed))
    if in_order:
        if images.shape[0] != samples or xflip:
            raise ValueError(f"in order: {samples} samples need exactly {samples} images and no x-flip")
        index = torch.arange(samples)
    else:
        index = torch.randint(n, (samples,), generator=g)
    for start in range(0, samples, DRAW_BLOCK):
        idx = index[start : start + DRAW_BLOCK]
        flip = idx >= images.shape[0]
        x0 = images[idx % images.shape[0]].to(torch.float32) / 127.5 - 1.0
        if flip.any():
            x0[flip] = x0[flip].flip(-1)
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float32)
        yield x0 + float(t) * eps


def _pixel_blocks(first: int, end: int, pixels: int, block: int) -> Iterator[tuple[int, int]]:
    """The absolute blocks [j block, (j + 1) block) of output pixels (clipped to `pixels`) that meet [first, end)."""
    for start in range((first // block) * block, end, block):
        yield start, min(start + block, pixels)


def _abs_jacobian_rows(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    t: torch.Tensor,
    rows_per_pass: int,
    method: str,
    check: Callable[[], None],
    first: int,
    end: int,
) -> torch.Tensor:
    """sum over the batch and input channels of |dD[b, c, p] / dz[b, c', :, :]| for the output pixels p in
    [first, end), `[C, end - first, H, W]` float64. Passes cover absolute pixel blocks of
    max(1, rows_per_pass // C) pixels times all C channels, whatever [first, end) is."""
    b, c, h, w = z.shape
    n_out = c * h * w
    acc = torch.zeros(c, end - first, h, w, dtype=torch.float64, device=z.device)
    if method == "vmap":
        from torch.func import vjp, vmap

        _, vjp_fn = vjp(lambda x: denoise(x, t), z)
    channel = torch.arange(c, device=z.device)[:, None]
    for p0, p1 in _pixel_blocks(first, end, h * w, max(1, rows_per_pass // c)):
        check()
        # Rows k = c H W + p, channel-major: the same rows in the same order for every range.
        k = (channel * (h * w) + torch.arange(p0, p1, device=z.device)[None, :]).reshape(-1)
        if method == "vmap":
            cot = torch.zeros(len(k), b, n_out, dtype=z.dtype, device=z.device)
            cot[torch.arange(len(k), device=z.device), :, k] = 1
            (grad,) = vmap(vjp_fn)(cot.reshape(len(k), b, c, h, w))
        elif method == "replicate":
            zr = z.repeat(len(k), 1, 1, 1).requires_grad_(True)
            with torch.enable_grad():
                out = denoise(zr, t.repeat(len(k))).reshape(len(k), b, n_out)
                out[torch.arange(len(k), device=z.device), :, k].sum().backward()
            grad = zr.grad.reshape(len(k), b, c, h, w)
        else:
            raise ValueError(f"unknown method {method!r}")
        rows = grad.abs().sum(dim=(1, 2)).to(torch.float64).reshape(c, p1 - p0, h, w)
        lo, hi = max(p0, first), min(p1, end)
        acc[:, lo - first : hi - first] += rows[:, lo - p0 : hi - p0]
    return acc


def gradient_heatmaps(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    t: float,
    samples: int,
    seed: int,
    *,
    xflip: bool = False,
    in_order: bool = False,
    outputs: tuple[int, int] | None = None,
    batch: int = 256,
    device: str | torch.device = "cpu",
    method: str = "auto",
    cancelled: Callable[[], bool] | None = None,
) -> np.ndarray:
    """G(., ., t) as `[H, W, H, W]` float64 over `samples` draws of z (see `draw_samples`), or with
    `outputs=(start, count)` the output pixels [start, start + count) only, `[count, H, W]`.

    `images`: uint8 `[N, C, H, W]` on the CPU (`in_order`: image i for sample i, see `draw_samples`). `denoise(z, t)` takes float32 z `[B, C, H, W]` and t
    `[B]` on `device`. About `batch` Jacobian rows are computed per pass (samples x output elements),
    which bounds memory. `method`: "vmap", "replicate" or "auto" (vmap, or replicate where vmap fails).
    `cancelled()` is polled between passes; True raises `Cancelled`.
    """
    if samples < 1:
        raise ValueError("samples must be >= 1")
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(f"images must be [N, C, H, W] with N >= 1, got {list(images.shape)}")
    device = torch.device(device)
    c, h, w = images.shape[1:]
    first, count = (0, h * w) if outputs is None else (int(outputs[0]), int(outputs[1]))
    if not (0 <= first and 1 <= count and first + count <= h * w):
        raise ValueError(f"output pixels [{first}, {first + count}) are not inside the {h * w} of the image")

    def check() -> None:
        if cancelled is not None and cancelled():
            raise Cancelled()

    acc = torch.zeros(c, count, h, w, dtype=torch.float64, device=device)
    chunk = max(1, min(batch, DRAW_BLOCK))
    span = (first, first + count)
    for block in draw_samples(images, t, samples, seed, xflip, in_order):
        for start in range(0, block.shape[0], chunk):
            z = block[start : start + chunk].to(device)
            tt = torch.full((z.shape[0],), float(t), dtype=torch.float32, device=device)
            rows = max(1, batch // z.shape[0])
            if method == "auto":
                try:
                    acc += _abs_jacobian_rows(denoise, z, tt, rows, "vmap", check, *span)
                    method = "vmap"
                    continue
                except (RuntimeError, NotImplementedError):
                    # torch.func cannot transform this network; plain autograd gives the same numbers.
                    method = "replicate"
            acc += _abs_jacobian_rows(denoise, z, tt, rows, method, check, *span)
    # Channels summed one after another (elementwise, so the same bits for every range).
    maps = acc[0].clone()
    for channel in range(1, c):
        maps += acc[channel]
    maps /= samples
    maps = maps.cpu().numpy()
    return maps.reshape(h, w, h, w) if outputs is None else maps


def locality_sides(maps: np.ndarray, fractions: tuple[float, ...] = LOCALITY_FRACTIONS) -> np.ndarray:
    """Per output pixel and fraction q, the side of the smallest centred square holding q of the map's
    mass (see the module doc): `[H, W, len(fractions)]` float64, odd integers."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or maps.shape[:2] != maps.shape[2:]:
        raise ValueError(f"maps must be [H, W, H, W], got {list(maps.shape)}")
    h, w = maps.shape[:2]
    return range_sides(maps.reshape(h * w, h, w), 0, fractions).reshape(h, w, len(fractions))


def range_sides(maps: np.ndarray, start: int, fractions: tuple[float, ...] = LOCALITY_FRACTIONS) -> np.ndarray:
    """`locality_sides` for the maps of output pixels [start, start + count), `maps` `[count, H, W]`:
    `[count, len(fractions)]` float64, the same numbers as those pixels' rows of the full map's sides."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or not 0 <= start <= maps.shape[1] * maps.shape[2] - maps.shape[0]:
        raise ValueError(f"maps must be [count, H, W] of pixels inside the image, got {list(maps.shape)} from {start}")
    count, h, w = maps.shape
    # Integral images: box sums in O(1) per (pixel, radius).
    s = np.zeros((count, h + 1, w + 1))
    s[:, 1:, 1:] = maps.cumsum(axis=1).cumsum(axis=2)
    ys, xs = np.divmod(np.arange(start, start + count), w)
    radii = np.arange(max(h, w))
    y0 = np.clip(ys[:, None] - radii[None, :], 0, h)
    y1 = np.clip(ys[:, None] + radii[None, :] + 1, 0, h)
    x0 = np.clip(xs[:, None] - radii[None, :], 0, w)
    x1 = np.clip(xs[:, None] + radii[None, :] + 1, 0, w)
    p = np.arange(count)[:, None]
    mass = s[p, y1, x1] - s[p, y0, x1] - s[p, y1, x0] + s[p, y0, x0]  # [count, radii]
    total = mass[:, -1:]
    out = np.empty((count, len(fractions)))
    for j, q in enumerate(fractions):
        enough = mass >= q * total - _MASS_SLACK * np.abs(total)
        out[:, j] = 2 * enough.argmax(axis=1) + 1  # the last radius always holds everything
    return out


def locality(maps: np.ndarray, fractions: tuple[float, ...] = LOCALITY_FRACTIONS) -> np.ndarray:
    """The locality figure: per fraction q, the mean over output pixels of the centred square's side, `[len(q)]`."""
    return locality_sides(maps, fractions).mean(axis=(0, 1))
