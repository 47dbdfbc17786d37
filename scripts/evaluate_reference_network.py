#!/usr/bin/env python3
"""Does the reference network generalize? Test-set MSE to the clean image per t of the 18-step EDM grid, for
the network, the optimal empirical denoiser and the Gaussian denoiser (issue 4's table).

The baselines come from `pspc denoise` over a dataset directory written by `pspc ingest` (the full 60k
training set with x-flip for the real table); the network is called directly. The queries are
z = x0 + t eps for the first --count test images, eps seeded, the same z for every method.

    .venv/bin/python scripts/train_reference_network.py --export /tmp/ref.pt
    .venv/bin/python scripts/evaluate_reference_network.py --checkpoint /tmp/ref.pt \\
        --data runs/demo/fashion-mnist --count 1000 --out runs/evaluation

Writes OUT/mse.csv, OUT/mse.json and prints a markdown table with the two checks of issue 4: the network
beats the empirical denoiser for t <= 1.09, and stays within 10 % of the better baseline for t in [1.5, 10].
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pspc_net.data import load_fashion_mnist, to_unit  # noqa: E402
from pspc_net.edm import time_grid  # noqa: E402
from pspc_net.model import load_checkpoint  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="dataset directory from `pspc ingest`")
    parser.add_argument("--pspc", default=".build/release/pspc")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    with open(args.checkpoint, "rb") as f:
        # Names the weights the table is for, whatever later happens to the file at that path.
        checkpoint_sha256 = hashlib.sha256(f.read()).hexdigest()
    net = load_checkpoint(args.checkpoint).eval()
    x0 = to_unit(load_fashion_mnist("test")[: args.count].float()).numpy().astype(np.float64)
    generator = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in time_grid(18).tolist():
            z = (x0 + t * generator.standard_normal(x0.shape)).astype(np.float32)
            np.save(os.path.join(tmp, "z.npy"), z)
            row = {"t": t}
            with torch.no_grad():
                outs = [net(torch.from_numpy(z[i : i + 250]), torch.full((len(z[i : i + 250]),), t)) for i in range(0, len(z), 250)]
            row["network"] = float(np.mean((torch.cat(outs).double().numpy() - x0) ** 2))
            for method in ("empirical", "gaussian"):
                out = os.path.join(tmp, f"{method}.npy")
                subprocess.run(
                    [args.pspc, "denoise", "--data", args.data, "--method", method, "--t", repr(t), "--input",
                     os.path.join(tmp, "z.npy"), "--output", out],
                    check=True, stderr=subprocess.DEVNULL)
                row[method] = float(np.mean((np.load(out).astype(np.float64) - x0) ** 2))
            rows.append(row)
            print(f"t = {t:8.4f}: network {row['network']:.5f} empirical {row['empirical']:.5f} gaussian {row['gaussian']:.5f}",
                  file=sys.stderr)

    with open(os.path.join(args.out, "mse.json"), "w") as f:
        record = {"checkpoint": args.checkpoint, "checkpoint_sha256": checkpoint_sha256, "count": args.count}
        json.dump({**record, "seed": args.seed, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "mse.csv"), "w") as f:
        f.write("t,network,empirical,gaussian\n")
        for r in rows:
            f.write(f"{r['t']:.6g},{r['network']:.6g},{r['empirical']:.6g},{r['gaussian']:.6g}\n")

    print("| t | network | empirical | gaussian | check |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        t, best = r["t"], min(r["empirical"], r["gaussian"])
        if t <= 1.09 + 1e-9:
            check = "beats empirical" if r["network"] < r["empirical"] else "WORSE than empirical"
        elif 1.5 <= t <= 10:
            check = f"{r['network'] / best:.3f} x best baseline" + ("" if r["network"] <= 1.1 * best else " (over 1.10)")
        else:
            check = ""
        print(f"| {t:.4g} | {r['network']:.5f} | {r['empirical']:.5f} | {r['gaussian']:.5f} | {check} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
