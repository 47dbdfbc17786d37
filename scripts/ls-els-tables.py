#!/usr/bin/env python3
"""Markdown tables of an LS/ELS study (scripts/study-ls-els.sh OUT): what RESULTS.md quotes, from the run's files.

    .venv/bin/python scripts/ls-els-tables.py OUT [--resamples 2000] [--seed 0]

For the forward and the reverse set: each method's best window per t (smallest MSE to the network over its swept
windows and the whole image, with the sweep's 95 % bootstrap interval), the closest method and its ratio to the
runner-up; then paired ratios of the best windows' MSEs (ELS / LS, ELS / PSPC-Square), with 95 % intervals from
resampling the same queries for both (per-query.csv; pspc_net.stats.ratio_of_means, the sweeps' definitions). Then the calibrated schedules and, for each solver, every
machine's similarity to the network's samples from shared noise (similarity.csv: Kamb & Ganguli's median Pearson
correlation over seeds, and the mean L2 distance, each with its interval).
"""
import argparse
import csv
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pspc_net.stats import RESAMPLES, ratio_of_means  # noqa: E402

NAMES = {"empirical": "empirical", "pspc-square": "PSPC-Square", "pspc-flex": "PSPC-Flex", "ls": "LS", "els": "ELS"}
WINDOW = {"empirical": "", "pspc-square": " (s)", "pspc-flex": " (lambda)", "ls": " (P)", "els": " (P)"}
METHODS = ["empirical", "pspc-square", "pspc-flex", "ls", "els"]
PAIRS = [("els", "ls"), ("els", "pspc-square")]


def number(v):
    v = float(v)
    return f"{v:.3g}" if v == 0 or abs(v) >= 1e-3 else f"{v:.2g}"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def whole_image_params(shape):
    """The param each windowed method's whole image goes by (the empirical rows stand for them)."""
    _, h, w = shape
    whole = {"ls": str(2 * max(h, w) - 1), "els": str(2 * max(h, w) - 1), "pspc-flex": "1"}
    if h == w:
        whole["pspc-square"] = str(h)
    return whole


class Sweep:
    def __init__(self, folder):
        config = json.loads((folder / "config.json").read_text())
        self.whole = whole_image_params(config["shape"])
        self.by_t = defaultdict(list)
        for row in read_csv(folder / "results.csv"):
            self.by_t[(int(row["t_index"]), float(row["t"]))].append(row)
        self.per_query = defaultdict(dict)
        for row in read_csv(folder / "per-query.csv"):
            self.per_query[(int(row["t_index"]), row["label"])][int(row["query"])] = float(row["mse_to_network"])

    def best(self, rows, method):
        """The method's row of smallest MSE to the network, the empirical row standing for its whole image."""
        empirical = [r for r in rows if r["method"] == "empirical"]
        if method == "empirical":
            return empirical[0] if empirical else None
        candidates = [r for r in rows if r["method"] == method]
        if not candidates:
            return None
        if method in self.whole:
            candidates += [dict(r, param=self.whole[method]) for r in empirical]
        return min(candidates, key=lambda r: float(r["mse_to_network"]))


def best_table(sweep):
    print("| t | " + " | ".join(NAMES[m] + WINDOW[m] for m in METHODS) + " | closest |")
    print("| --- " * (len(METHODS) + 2) + "|")
    for (_, t), rows in sorted(sweep.by_t.items()):
        cells, best = [], {}
        for m in METHODS:
            b = sweep.best(rows, m)
            if b is None:
                cells.append("-")
                continue
            best[m] = float(b["mse_to_network"])
            window = "" if m == "empirical" else f" ({b['param']})"
            cells.append(f"{number(b['mse_to_network'])} [{number(b['mse_to_network_ci_low'])}, "
                         f"{number(b['mse_to_network_ci_high'])}]{window}")
        order = sorted(best, key=best.get)
        if len(order) < 2:
            closest = "-"
        elif best[order[1]] <= best[order[0]] * 1.0005:
            tied = [NAMES[m] for m in order if best[m] <= best[order[0]] * 1.0005]
            closest = "all equal (whole image)" if len(tied) == len(order) else " = ".join(tied)
        else:
            closest = f"{NAMES[order[0]]} ({best[order[1]] / best[order[0]]:.3g}x {NAMES[order[1]]})"
        print(f"| {t:.3g} | " + " | ".join(cells) + f" | {closest} |")


def paired_table(sweep, resamples, seed):
    print("| t | " + " | ".join(f"{NAMES[a]} / {NAMES[b]}" for a, b in PAIRS) + " |")
    print("| --- " * (len(PAIRS) + 1) + "|")
    for (ti, t), rows in sorted(sweep.by_t.items()):
        cells = []
        for a, b in PAIRS:
            ra, rb = sweep.best(rows, a), sweep.best(rows, b)
            if ra is None or rb is None:
                cells.append("-")
                continue
            if ra["label"] == rb["label"]:
                cells.append("1 (both the whole image)" if ra["method"] == "empirical" else "1")
                continue
            ea, eb = sweep.per_query[(ti, ra["label"])], sweep.per_query[(ti, rb["label"])]
            queries = sorted(set(ea) & set(eb))
            if not queries:
                cells.append("-")
                continue
            ratio, low, high = ratio_of_means(np.array([ea[q] for q in queries]), np.array([eb[q] for q in queries]),
                                              resamples=resamples, seed=seed)
            cells.append(f"{ratio:.3g} [{low:.3g}, {high:.3g}] ({ra['param'] or 'whole'} vs "
                         f"{rb['param'] or 'whole'})")
        print(f"| {t:.3g} | " + " | ".join(cells) + " |")


def schedules_table(calibration):
    files = {"PSPC-Square (s)": "patch-schedule.json", "PSPC-Flex (lambda)": "lambda-schedule.json",
             "LS (P)": "ls-schedule.json", "ELS (P)": "els-schedule.json"}
    loaded = {k: json.loads((calibration / f).read_text()) for k, f in files.items() if (calibration / f).exists()}
    if not loaded:
        return
    ts = next(iter(loaded.values()))["t"]
    print("| t | " + " | ".join(loaded) + " |")
    print("| --- " * (len(loaded) + 1) + "|")
    for i, t in enumerate(ts):
        print(f"| {t:.3g} | " + " | ".join(f"{v['values'][i]:g}" for v in loaded.values()) + " |")


def similarity_table(folders):
    rows = {}
    for name, folder in folders:
        path = folder / "similarity.csv"
        if path.exists():
            table = {}
            for r in read_csv(path):
                if r["method_a"] == "network" and r["method_b"] != "network":
                    table[r["method_b"]] = r
                elif r["method_b"] == "network" and r["method_a"] != "network":
                    table[r["method_a"]] = r
            rows[name] = table
    if not rows:
        return
    methods = list(next(iter(rows.values())))
    header = " | ".join(f"{n} Pearson median | {n} mean L2" for n in rows)
    print(f"| machine | {header} |")
    print("| --- " * (2 * len(rows) + 1) + "|")
    for m in methods:
        cells = []
        for n in rows:
            r = rows[n].get(m)
            if r is None:
                cells += ["-", "-"]
                continue
            cells.append(f"{float(r['pearson_median']):.3f} [{float(r['pearson_median_ci_low']):.3f}, "
                         f"{float(r['pearson_median_ci_high']):.3f}]")
            cells.append(f"{float(r['mean_l2']):.2f} [{float(r['mean_l2_ci_low']):.2f}, "
                         f"{float(r['mean_l2_ci_high']):.2f}]")
        print(f"| {m} | " + " | ".join(cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the study's folder (scripts/study-ls-els.sh OUT)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples of the paired ratios")
    parser.add_argument("--seed", type=int, default=0, help="seed of the paired bootstrap")
    args = parser.parse_args()
    if args.resamples < 40:
        parser.error("--resamples must be at least 40")
    found = False
    for name in ["forward", "reverse"]:
        folder = args.out / name
        if not (folder / "results.csv").exists():
            continue
        found = True
        sweep = Sweep(folder)
        print(f"\n### {name}: MSE to the network at each method's best window [95 % interval]\n")
        best_table(sweep)
        print(f"\n### {name}: paired ratios of the best windows' MSEs [95 % interval]\n")
        paired_table(sweep, args.resamples, args.seed)
    if (args.out / "calibration").is_dir():
        print("\n### calibrated windows (forward and reverse together)\n")
        schedules_table(args.out / "calibration")
    solvers = [(s.capitalize(), args.out / f"samples-{s}") for s in ["euler", "heun"]]
    if any((f / "similarity.csv").exists() for _, f in solvers):
        print("\n### samples from shared noise: similarity to the network's [95 % interval]\n")
        similarity_table(solvers)
    if not found:
        print(f"error: {args.out} holds no forward/ or reverse/ results.csv (is it a study-ls-els.sh folder?)",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
