"""The benchmark's PyTorch peer (pspc_net.els_peer) against a literal NumPy loop over windows, so that
scripts/bench-els.sh times the definitions of docs/science.md section 5.1 and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pspc_net import els_peer


def literal(z, train, t, patch, equivariant):
    """One zero-padded window at a time: z [C, H, W], train [N, C, H, W]."""
    c, h, w = z.shape
    r = patch // 2

    def window(image, cy, cx):
        padded = np.pad(image, ((0, 0), (r, r), (r, r)))
        return padded[:, cy : cy + patch, cx : cx + patch]

    def cls(y, n):
        return y if y < r else (-1 if y < n - r else -2 - (n - 1 - y))

    out = np.zeros_like(z)
    for y in range(h):
        for x in range(w):
            if equivariant:
                cands = [(qy, qx) for qy in range(h) for qx in range(w) if cls(qy, h) == cls(y, h) and cls(qx, w) == cls(x, w)]
            else:
                cands = [(y, x)]
            q = window(z, y, x)
            logits, values = [], []
            for image in train:
                for qy, qx in cands:
                    logits.append(-((q - window(image, qy, qx)) ** 2).sum() / (2 * t * t))
                    values.append(image[:, qy, qx])
            logits = np.array(logits)
            weights = np.exp(logits - logits.max())
            out[:, y, x] = (weights[:, None] * np.array(values)).sum(0) / weights.sum()
    return out


@pytest.mark.parametrize("method", ["ls", "els"])
@pytest.mark.parametrize("patch", [3, 5])
@pytest.mark.parametrize("t", [0.05, 1.0])
def test_peer_matches_the_definition(method, patch, t):
    rng = np.random.default_rng(patch)
    train = rng.uniform(-1, 1, size=(5, 2, 7, 9))
    z = train[0] + t * rng.standard_normal((2, 7, 9))
    run = els_peer.denoise_ls if method == "ls" else els_peer.denoise_els
    got = run(torch.from_numpy(z), torch.from_numpy(train), t, patch, chunk=2, **({"budget": 64} if method == "els" else {}))
    expected = literal(z, train, t, patch, method == "els")
    assert np.abs(got.numpy() - expected).max() < 1e-9
