"""The skilled-user peer of the scale benchmark (scripts/bench-scale.sh): the same denoisers as `pspc denoise`,
written the way a practitioner with PyTorch would write them, in float64 on the same cores.

    PYTHONPATH=scripts .venv/bin/python -m pspc_net.peer --method pspc-square --patch-size 7 \\
        --train train.npy --queries z.npy --t 1.09 --out peer.npy [--threads N] [--json timing.json]

- empirical: one GEMM per chunk of training images (||z||^2 + ||x||^2 - 2 z.x) and a running log-sum-exp.
- pspc-square: F.unfold of queries and of each chunk of training images, one batched GEMM per crop position
  (torch.bmm over the (H-s+1)(W-s+1) crops), a running log-sum-exp per (crop, query), each crop's posterior mean,
  then F.fold to average the overlapping crops; 32 queries per batch.
- pspc-flex: the per-pixel squared differences e_i(p) of each (query, training image) times the 0/1 matrix of the
  distinct masks (one GEMM) give every mask's distance; round 1 log-normalisers, round 2 the weights times the
  mask matrix (a second GEMM) spread onto pixels; the composite divides by each pixel's coverage, and pixels no
  mask covers take the empirical value. Masks follow the lambda rule: a heatmap pixel is kept when the heatmap
  mass strictly above its value is below lambda times the total.

Training images are converted to float64 once, before the clock starts, when they fit in `--resident-gb`;
otherwise each chunk is converted as it is used (and that counts). The timing JSON holds the compute seconds
(queries to output, excluding reading the files) and the setup seconds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F


def to_unit(u8: torch.Tensor) -> torch.Tensor:
    return u8.to(torch.float64) / 127.5 - 1.0


class Training:
    """uint8 images [N, C, H, W], handed out as float64 chunks."""

    def __init__(self, images: np.ndarray, resident_gb: float):
        self.u8 = torch.from_numpy(np.array(images))
        self.count = self.u8.shape[0]
        self.resident = None
        if self.u8.numel() * 8 <= resident_gb * 2**30:
            self.resident = to_unit(self.u8)

    def chunks(self, size: int):
        for start in range(0, self.count, size):
            if self.resident is not None:
                yield self.resident[start : start + size]
            else:
                yield to_unit(self.u8[start : start + size])


def lse_update(m, s, v, logits, values_fn):
    """Running log-sum-exp over the last axis of `logits`; `values_fn(w)` gives the weighted value sum of w."""
    m_new = torch.maximum(m, logits.amax(-1))
    scale = torch.exp(m - m_new)
    w = torch.exp(logits - m_new.unsqueeze(-1))
    s = s * scale + w.sum(-1)
    if v is not None:
        v = v * scale.unsqueeze(-1) + values_fn(w)
    return m_new, s, v


def empirical(train: Training, z: torch.Tensor, t: float, chunk: int = 4096) -> torch.Tensor:
    b = z.shape[0]
    zf = z.reshape(b, -1)
    zn = (zf * zf).sum(1)
    m = torch.full((b,), -torch.inf, dtype=torch.float64)
    s = torch.zeros(b, dtype=torch.float64)
    v = torch.zeros_like(zf)
    for xc in train.chunks(chunk):
        xf = xc.reshape(xc.shape[0], -1)
        xn = (xf * xf).sum(1)
        d = (zn[:, None] + xn[None, :] - 2.0 * (zf @ xf.T)).clamp_min_(0.0)
        m, s, v = lse_update(m, s, v, -d / (2 * t * t), lambda w: w @ xf)
    return (v / s[:, None]).reshape(z.shape)


def crops(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Every s x s crop of each image, [L, n, C s s] with one contiguous block per crop position (what
    F.unfold gives, [n, C s s, L], laid out for torch.bmm over the crops; one strided copy)."""
    n, c, h, w = x.shape
    lc = (h - patch + 1) * (w - patch + 1)
    return x.unfold(2, patch, 1).unfold(3, patch, 1).permute(2, 3, 0, 1, 4, 5).reshape(lc, n, c * patch * patch)


def crop_norms(x: torch.Tensor, patch: int) -> torch.Tensor:
    """||x_crop||^2 for every crop, [L, n], by a box filter of the channel-summed squares."""
    n = x.shape[0]
    box = F.avg_pool2d((x * x).sum(1, keepdim=True), patch, stride=1) * (patch * patch)
    return box.reshape(n, -1).T


def square(train: Training, z: torch.Tensor, t: float, patch: int, chunk: int = 256, batch: int = 32):
    _, c, h, w = z.shape
    cover = F.fold(F.unfold(torch.ones(1, 1, h, w, dtype=torch.float64), patch), (h, w), patch)
    # Per batch of 32 queries: its crops and running (m, s, v) per (crop, query); each chunk of training images
    # is cut into crops once and serves every batch.
    batches = []
    for q0 in range(0, z.shape[0], batch):
        zu = crops(z[q0 : q0 + batch], patch)  # [L, B, K]
        lc, b, _ = zu.shape
        batches.append([zu, (zu * zu).sum(-1), torch.full((lc, b), -torch.inf, dtype=torch.float64),
                        torch.zeros(lc, b, dtype=torch.float64), torch.zeros_like(zu)])
    for xc in train.chunks(chunk):
        xu = crops(xc, patch)  # [L, n, K]
        xn = crop_norms(xc, patch)  # [L, n]
        for state in batches:
            zu, zn, m, s, v = state
            d = (zn.unsqueeze(-1) + xn.unsqueeze(1) - 2.0 * torch.bmm(zu, xu.transpose(1, 2))).clamp_min_(0.0)
            state[2], state[3], state[4] = lse_update(m, s, v, -d / (2 * t * t), lambda wt: torch.bmm(wt, xu))
    outs = []
    for zu, _, m, s, v in batches:
        mean = (v / s.unsqueeze(-1)).permute(1, 2, 0)  # [B, K, L]
        outs.append(F.fold(mean, (h, w), patch) / cover)
    return torch.cat(outs)


def lambda_masks(maps: np.ndarray, lam: float) -> np.ndarray:
    """[P, P] heatmaps (output pixel -> input map) -> [P, P] bool masks by the lambda rule."""
    p = maps.shape[0]
    masks = np.ones((p, p), dtype=bool)
    if lam >= 1:
        return masks
    for o in range(p):
        row = maps[o]
        total = row.sum()
        if total <= 0:
            continue
        ascending = np.sort(row)
        # Mass strictly above value v: total minus the sum of values <= v.
        upto = np.cumsum(ascending)
        idx = np.searchsorted(ascending, row, side="right") - 1
        above = total - upto[idx]
        masks[o] = above < lam * total
    return masks


def flex(train: Training, z: torch.Tensor, t: float, masks: np.ndarray, chunk: int = 256, batch: int = 32):
    _, c, h, w = z.shape
    hw = h * w
    keep = masks.any(1)
    distinct, counts = np.unique(masks[keep], axis=0, return_counts=True)
    mm = torch.from_numpy(distinct.astype(np.float64))  # [K, HW]
    mult = torch.from_numpy(counts.astype(np.float64))  # [K]
    cover = mult @ mm  # [HW]
    uncovered = cover == 0
    k2t2 = 1.0 / (2 * t * t)
    out = torch.empty_like(z)
    for q0 in range(0, z.shape[0], batch):
        zb = z[q0 : q0 + batch].reshape(-1, c, hw)
        b = zb.shape[0]
        m = torch.full((b, mm.shape[0]), -torch.inf, dtype=torch.float64)
        s = torch.zeros(b, mm.shape[0], dtype=torch.float64)
        for xc in train.chunks(chunk):
            e = ((zb[:, None] - xc.reshape(1, -1, c, hw)) ** 2).sum(2)  # [B, n, HW]
            logits = -(e @ mm.T) * k2t2  # [B, n, K]
            m_new = torch.maximum(m, logits.amax(1))
            s = s * torch.exp(m - m_new) + torch.exp(logits - m_new[:, None, :]).sum(1)
            m = m_new
        log_z = m + torch.log(s)  # [B, K]
        num = torch.zeros(b, c, hw, dtype=torch.float64)
        for xc in train.chunks(chunk):
            xf = xc.reshape(-1, c, hw)
            e = ((zb[:, None] - xf[None]) ** 2).sum(2)
            wts = torch.exp(-(e @ mm.T) * k2t2 - log_z[:, None, :]) * mult  # [B, n, K]
            spread = wts @ mm  # [B, n, HW]
            num += torch.einsum("bnp,ncp->bcp", spread, xf)
        res = num / cover.clamp_min(1.0)
        if uncovered.any():
            emp = empirical(train, z[q0 : q0 + b], t).reshape(b, c, hw)
            res[:, :, uncovered] = emp[:, :, uncovered]
        out[q0 : q0 + b] = res.reshape(b, c, h, w)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=["empirical", "pspc-square", "pspc-flex"])
    p.add_argument("--train", required=True, help="uint8 training images [N, C, H, W], .npy")
    p.add_argument("--queries", required=True, help="queries z [B, C, H, W], .npy (float32 or float64)")
    p.add_argument("--t", type=float, required=True)
    p.add_argument("--out", required=True, help="where to write the float32 output [B, C, H, W], .npy")
    p.add_argument("--patch-size", type=int, default=7)
    p.add_argument("--heatmaps", help="pspc-flex: [H, W, H, W] heatmaps, .npy")
    p.add_argument("--lambda", dest="lam", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--resident-gb", type=float, default=6.0)
    p.add_argument("--json", help="write {compute_s, setup_s, queries} here")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    start = time.perf_counter()
    images = np.load(a.train, mmap_mode="r")
    if images.dtype != np.uint8 or images.ndim != 4:
        raise SystemExit(f"{a.train}: expected uint8 [N, C, H, W], got {images.dtype} {images.shape}")
    z = torch.from_numpy(np.load(a.queries).astype(np.float64))
    if tuple(z.shape[1:]) != images.shape[1:]:
        raise SystemExit(f"{a.queries}: queries are {tuple(z.shape)}, training images {images.shape}")
    train = Training(images, a.resident_gb)
    masks = None
    if a.method == "pspc-flex":
        if not a.heatmaps:
            raise SystemExit("pspc-flex needs --heatmaps")
        maps = np.load(a.heatmaps).astype(np.float64)
        pix = images.shape[2] * images.shape[3]
        masks = lambda_masks(maps.reshape(pix, pix), a.lam)
    setup = time.perf_counter() - start
    begin = time.perf_counter()
    with torch.no_grad():
        if a.method == "empirical":
            out = empirical(train, z, a.t)
        elif a.method == "pspc-square":
            out = square(train, z, a.t, a.patch_size)
        else:
            out = flex(train, z, a.t, masks)
    compute = time.perf_counter() - begin
    np.save(a.out, out.numpy().astype(np.float32))
    timing = {"method": a.method, "compute_s": compute, "setup_s": setup, "queries": int(z.shape[0]),
              "threads": torch.get_num_threads(), "resident": train.resident is not None}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(timing, f)
    print(json.dumps(timing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
