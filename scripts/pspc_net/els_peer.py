"""A float64 PyTorch peer of `pspc denoise --method ls|els` (Kamb & Ganguli's LS and ELS machines), for
scripts/bench-els.sh: the same definitions (docs/science.md), written the way one would in PyTorch.

Windows are F.unfold patches (zero padding, so pixels outside the image drop out of the distance). LS: for every
pixel, the N training windows at that pixel, distances from exact differences, chunked over images. ELS: pixels
are grouped by padding class (row class x column class); within a class the distances between the query's
windows and every training window of the class come from torch.bmm (||z||^2 + ||w||^2 - 2 z.w), chunked over
images, with a running log-sum-exp per pixel. Prints the time per query.
"""

import argparse
import gzip
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def read_idx_images(path, limit):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, n, h, w = np.frombuffer(data[:16], dtype=">u4")
    if magic != 2051:
        sys.exit(f"{path}: not an IDX image file")
    n = min(int(n), limit)
    pixels = np.frombuffer(data[16 : 16 + n * h * w], dtype=np.uint8).reshape(n, 1, h, w)
    return pixels


def position_classes(n, r):
    """Class of each row (or column) of n: y for the top edge, -1 inside, -2 - (n - 1 - y) for the bottom."""
    return [y if y < r else (-1 if y < n - r else -2 - (n - 1 - y)) for y in range(n)]


class RunningLSE:
    """Per-pixel running (m, s, v) over candidate chunks."""

    def __init__(self, pixels, channels):
        self.m = torch.full((pixels,), -float("inf"), dtype=torch.float64)
        self.s = torch.zeros(pixels, dtype=torch.float64)
        self.v = torch.zeros(pixels, channels, dtype=torch.float64)

    def update(self, index, logits, values):
        """logits [P, K], values [P, K, C] (or [K, C] shared by every pixel) for the pixels `index`."""
        chunk_max = logits.max(dim=1).values
        m_old = self.m[index]
        m_new = torch.maximum(m_old, chunk_max)
        scale = torch.exp(m_old - m_new)
        weights = logits.sub_(m_new[:, None]).exp_()
        self.m[index] = m_new
        self.s[index] = self.s[index] * scale + weights.sum(dim=1)
        if values.dim() == 2:
            add = weights @ values
        else:
            add = torch.einsum("pk,pkc->pc", weights, values)
        self.v[index] = self.v[index] * scale[:, None] + add

    def means(self):
        return self.v / self.s[:, None]


def denoise_ls(z, train, t, patch, chunk):
    """z [C, H, W], train [N, C, H, W] float64."""
    c, h, w = z.shape
    r = patch // 2
    zw = F.unfold(z[None], patch, padding=r)[0]  # [C P P, H W]
    lse = RunningLSE(h * w, c)
    everything = torch.arange(h * w)
    k = 1.0 / (2 * t * t)
    for lo in range(0, train.shape[0], chunk):
        x = train[lo : lo + chunk]
        xw = F.unfold(x, patch, padding=r)  # [n, C P P, H W]
        d = ((xw - zw[None]) ** 2).sum(dim=1)  # [n, H W], exact differences
        centres = x.reshape(x.shape[0], c, h * w).permute(2, 0, 1)  # [H W, n, C]
        lse.update(everything, (-d * k).T, centres)
    return lse.means().T.reshape(c, h, w)


def denoise_els(z, train, t, patch, chunk, budget=1 << 21):
    c, h, w = z.shape
    r = patch // 2
    rows, cols = position_classes(h, r), position_classes(w, r)
    classes = {}
    for p in range(h * w):
        classes.setdefault((rows[p // w], cols[p % w]), []).append(p)
    groups = [torch.tensor(ps) for ps in classes.values()]
    zw = F.unfold(z[None], patch, padding=r)[0]  # [K, H W]
    lse = RunningLSE(h * w, c)
    k = 1.0 / (2 * t * t)
    for lo in range(0, train.shape[0], chunk):
        x = train[lo : lo + chunk]
        xw = F.unfold(x, patch, padding=r)  # [n, K, H W]
        centres = x.reshape(x.shape[0], c, h * w)
        for g in groups:
            q = zw[:, g].T.contiguous()  # [G, K] query windows of the class
            qn = (q * q).sum(1)[:, None]
            # Images per step so that the [G, n G] distance block stays about `budget` doubles (in cache).
            step = max(1, budget // (len(g) * len(g)))
            for a in range(0, x.shape[0], step):
                n = min(step, x.shape[0] - a)
                cand = xw[a : a + n][:, :, g].permute(1, 0, 2).reshape(zw.shape[0], -1)  # [K, n G]
                vals = centres[a : a + n][:, :, g].permute(0, 2, 1).reshape(-1, c)  # [n G, C]
                logits = torch.addmm((cand * cand).sum(0)[None, :], q, cand, alpha=-2)
                logits.add_(qn).clamp_(min=0).mul_(-k)
                lse.update(g, logits, vals)
    return lse.means().T.reshape(c, h, w)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="IDX images (gzipped or plain)")
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--queries", required=True, help="z.npy [B, C, H, W] float64")
    parser.add_argument("--count", type=int, default=None, help="first K queries only")
    parser.add_argument("--t", type=float, required=True)
    parser.add_argument("--patch-size", type=int, default=3)
    parser.add_argument("--method", choices=["ls", "els"], required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=256, help="training images per chunk")
    parser.add_argument("--output", help="write D(z, t) .npy here")
    parser.add_argument("--compare", help="a pspc output .npy of the same queries: print the max |difference|")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = torch.from_numpy(read_idx_images(args.train, args.limit).astype(np.float64) / 127.5 - 1)
    z = torch.from_numpy(np.load(args.queries).astype(np.float64))
    if args.count is not None:
        z = z[: args.count]
    run = denoise_ls if args.method == "ls" else denoise_els
    outputs, times = [], []
    for i in range(z.shape[0]):
        start = time.perf_counter()
        outputs.append(run(z[i], train, args.t, args.patch_size, args.chunk))
        times.append(time.perf_counter() - start)
        print(f"peer {args.method} query {i}: {times[-1]:.3f} s", flush=True)
    out = torch.stack(outputs).numpy()
    print(f"peer {args.method}: {np.mean(times):.3f} s per query (mean of {len(times)})")
    if args.output:
        np.save(args.output, out)
    if args.compare:
        theirs = np.load(args.compare)[: out.shape[0]]
        print(f"peer {args.method}: max |peer - pspc| = {np.abs(out - theirs).max():.3e}")


if __name__ == "__main__":
    main()
