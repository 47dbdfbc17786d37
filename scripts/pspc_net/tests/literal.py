"""Literal float64 partial sums from the definitions (docs/science.md, docs/design.md section 2), in numpy, sharing
no code with the torch worker or the Swift engine: every distance a sum of squared differences, windows cut out of
explicitly zero-padded images, softmaxes against the largest logit with numpy's exp. The posterior quantities it
returns (log Z = m + log s and the means v / s) do not depend on how partials are scaled, so they compare with any
worker's answer."""

from __future__ import annotations

import numpy as np


def training_values(pixels: np.ndarray, xflip: bool) -> np.ndarray:
    """uint8 [n, C, H, W] -> float64 values u / 127.5 - 1, the mirrored copies after the originals."""
    x = pixels.astype(np.float64) / 127.5 - 1
    return np.concatenate([x, x[..., ::-1]]) if xflip else x


def _softmax(logits: np.ndarray, values: np.ndarray | None):
    """logits [..., N], values [..., N, L] or None -> (log Z [...], means [..., L])."""
    m = logits.max(-1, keepdims=True)
    w = np.exp(logits - m)
    s = w.sum(-1)
    log_z = m[..., 0] + np.log(s)
    if values is None:
        return log_z, None
    return log_z, (w[..., None] * values).sum(-2) / s[..., None]


def empirical(z: np.ndarray, x: np.ndarray, t: float):
    """z [B, C, H, W], x [N, C, H, W] -> log Z [B], means [B, D]."""
    b, n = len(z), len(x)
    d = ((z.reshape(b, 1, -1) - x.reshape(1, n, -1)) ** 2).sum(-1)
    return _softmax(-d / (2 * t * t), np.broadcast_to(x.reshape(1, n, -1), (b, n, x[0].size)))


def pixel_errors(z: np.ndarray, x: np.ndarray) -> np.ndarray:
    """e(p) = sum_c (z - x)^2, [B, N, H, W]."""
    return ((z[:, None] - x[None]) ** 2).sum(2)


def square_crops(height: int, width: int, s: int) -> list[list[int]]:
    return [
        [(y0 + dy) * width + x0 + dx for dy in range(s) for dx in range(s)]
        for y0 in range(height - s + 1)
        for x0 in range(width - s + 1)
    ]


def crop_log_z(z: np.ndarray, x: np.ndarray, t: float, crops: list[list[int]]) -> np.ndarray:
    """log Z per query and crop, [B, K]."""
    e = pixel_errors(z, x).reshape(len(z), len(x), -1)
    d = np.stack([e[:, :, crop].sum(-1) for crop in crops], -1)  # [B, N, K]
    return _softmax(np.moveaxis(-d / (2 * t * t), 1, 2), None)[0]


def crop_composite(z, x, t, crops, multiplicity, log_z) -> np.ndarray:
    """sum over crops covering each pixel (times multiplicity) of the crop's posterior weights times x, [B, C, HW]."""
    b, n = len(z), len(x)
    c, hw = x.shape[1], x.shape[2] * x.shape[3]
    e = pixel_errors(z, x).reshape(b, n, hw)
    xs = x.reshape(n, c, hw)
    out = np.zeros((b, c, hw))
    for k, crop in enumerate(crops):
        w = np.exp(-e[:, :, crop].sum(-1) / (2 * t * t) - log_z[:, k : k + 1]) * multiplicity[k]  # [B, N]
        for p in crop:
            out[:, :, p] += w @ xs[:, :, p]
    return out


def padded_windows(images: np.ndarray, size: int) -> np.ndarray:
    """Every pixel's size x size window of zero-padded images, [N, H W, C size^2]."""
    n, c, h, w = images.shape
    r = size // 2
    padded = np.zeros((n, c, h + 2 * r, w + 2 * r))
    padded[:, :, r : r + h, r : r + w] = images
    out = np.empty((n, h * w, c * size * size))
    for y in range(h):
        for x in range(w):
            out[:, y * w + x] = padded[:, :, y : y + size, x : x + size].reshape(n, -1)
    return out


def window_posterior(z, x, t, size: int, equivariant: bool):
    """LS / ELS: per query and pixel, log Z and the mean of the candidates' centre pixels, [B, HW] and [B, HW, C]."""
    b, n = len(z), len(x)
    c, h, w = x.shape[1:]
    r = size // 2
    zw, xw = padded_windows(z, size), padded_windows(x, size)
    centres = x.reshape(n, c, h * w).transpose(0, 2, 1)  # [N, HW, C]
    log_z = np.empty((b, h * w))
    means = np.empty((b, h * w, c))
    if not equivariant:
        d = ((zw[:, None] - xw[None]) ** 2).sum(-1)  # [B, N, HW]
        lz, mean = _softmax(np.moveaxis(-d / (2 * t * t), 1, 2), np.broadcast_to(centres.transpose(1, 0, 2), (b, h * w, n, c)))
        return lz, mean
    # The pixels sharing p's padding pattern are p's candidate positions.
    pattern = {}
    for y in range(h):
        for xx in range(w):
            key = (min(y, r), min(h - 1 - y, r), min(xx, r), min(w - 1 - xx, r))
            pattern.setdefault(key, []).append(y * w + xx)
    for positions in pattern.values():
        cand = xw[:, positions].reshape(-1, xw.shape[-1])  # [N |class|, J]
        vals = centres[:, positions].reshape(-1, c)
        for p in positions:
            d = ((zw[:, p][:, None, :] - cand[None]) ** 2).sum(-1)  # [B, N |class|]
            lz, mean = _softmax(-d / (2 * t * t), np.broadcast_to(vals, (b,) + vals.shape))
            log_z[:, p], means[:, p] = lz, mean
    return log_z, means


def moments(x: np.ndarray, rows: slice):
    flat = x.reshape(len(x), -1)
    return len(x), flat.sum(0), flat[:, rows].T @ flat
