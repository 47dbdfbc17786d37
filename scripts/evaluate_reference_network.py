#!/usr/bin/env python3
"""Does the reference network generalize? Test-set MSE to the clean image per t of the 18-step EDM grid, for
the network, the optimal empirical denoiser and the Gaussian denoiser (issue 4's table).

The baselines come from `pspc denoise` over a dataset directory written by `pspc ingest` (the full 60k
training set with x-flip for the real table); the network is called directly. The queries are
z = x0 + t eps for the first --count test images, eps seeded, the same z for every method.

    .venv/bin/python scripts/train_reference_network.py --export /tmp/ref.pt
    .venv/bin/python scripts/evaluate_reference_network.py --checkpoint /tmp/ref.pt \\
        --data runs/demo/fashion-mnist --count 1000 --out runs/evaluation

Writes OUT/mse.csv and OUT/mse.json (each MSE with its 95 % bootstrap interval over the test images, and the
network's ratio to each baseline with its paired interval), OUT/per-query-mse.npz (t and each method's MSE per
grid t and image, [18, count]) and prints the card's checks (pspc_net/card.py): the network is below the
optimal denoiser for t <= 1.92 and within 2 % of the better baseline for t >= 3.26.
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

from pspc_net.card import generalization_table  # noqa: E402
from pspc_net.data import load_fashion_mnist, to_unit  # noqa: E402
from pspc_net.edm import time_grid  # noqa: E402
from pspc_net.model import load_checkpoint  # noqa: E402
from pspc_net.stats import mean_interval, ratio_of_means  # noqa: E402

METHODS = ("network", "empirical", "gaussian")


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
    per_query = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        for t in time_grid(18).tolist():
            z = (x0 + t * generator.standard_normal(x0.shape)).astype(np.float32)
            np.save(os.path.join(tmp, "z.npy"), z)
            outputs = {}
            with torch.no_grad():
                outs = [net(torch.from_numpy(z[i : i + 250]), torch.full((len(z[i : i + 250]),), t)) for i in range(0, len(z), 250)]
            outputs["network"] = torch.cat(outs).double().numpy()
            for method in ("empirical", "gaussian"):
                out = os.path.join(tmp, f"{method}.npy")
                subprocess.run(
                    [args.pspc, "denoise", "--data", args.data, "--method", method, "--t", repr(t), "--input",
                     os.path.join(tmp, "z.npy"), "--output", out],
                    check=True, stderr=subprocess.DEVNULL)
                outputs[method] = np.load(out).astype(np.float64)
            errors = {m: ((outputs[m] - x0) ** 2).reshape(len(x0), -1).mean(axis=1) for m in METHODS}
            row = {"t": t}
            for m in METHODS:
                per_query[m].append(errors[m])
                row[m] = float(errors[m].mean())
                row[f"{m}_ci"] = list(mean_interval(errors[m]))
            best = "empirical" if row["empirical"] <= row["gaussian"] else "gaussian"
            for name, baseline in (("empirical", "empirical"), ("best", best)):
                ratio, low, high = ratio_of_means(errors["network"], errors[baseline])
                row[f"ratio_to_{name}"], row[f"ratio_to_{name}_ci"] = ratio, [low, high]
            row["best_baseline_method"] = best
            rows.append(row)
            print(f"t = {t:8.4f}: network {row['network']:.5f} empirical {row['empirical']:.5f} gaussian {row['gaussian']:.5f}"
                  f"  network / best {row['ratio_to_best']:.4f} [{row['ratio_to_best_ci'][0]:.4f}, "
                  f"{row['ratio_to_best_ci'][1]:.4f}]", file=sys.stderr)
    np.savez(os.path.join(args.out, "per-query-mse.npz"), t=np.array([r["t"] for r in rows]),
             **{m: np.stack(per_query[m]) for m in METHODS})

    with open(os.path.join(args.out, "mse.json"), "w") as f:
        record = {"checkpoint": args.checkpoint, "checkpoint_sha256": checkpoint_sha256, "count": args.count}
        json.dump({**record, "seed": args.seed, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "mse.csv"), "w") as f:
        f.write("t," + ",".join(f"{m},{m}_ci_low,{m}_ci_high" for m in METHODS)
                + ",ratio_to_best,ratio_to_best_ci_low,ratio_to_best_ci_high,best_baseline_method\n")
        for r in rows:
            cells = [f"{r['t']:.6g}"] + [f"{v:.6g}" for m in METHODS for v in (r[m], *r[f"{m}_ci"])]
            cells += [f"{v:.6g}" for v in (r["ratio_to_best"], *r["ratio_to_best_ci"])] + [r["best_baseline_method"]]
            f.write(",".join(cells) + "\n")

    table = generalization_table(rows)
    print("| t | network | empirical | gaussian | network / best [95 %] | requirement | result |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in table["rows"]:
        low, high = r["ratio_to_best_ci"]
        result = {True: "pass", False: "FAIL", None: ""}[r["passed"]]
        print(f"| {r['t']:.4g} | {r['network']:.5f} | {r['empirical']:.5f} | {r['gaussian']:.5f} | "
              f"{r['ratio_to_best']:.4f} [{low:.4f}, {high:.4f}] | {r['requirement']} | {result} |")
    print(f"overall: {'pass' if table['passed'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
