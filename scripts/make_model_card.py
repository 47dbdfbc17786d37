#!/usr/bin/env python3
"""Write the reference network's model card (issue 4): README.md, figures/*.png, metrics.json, loss.csv and a
copy of the checkpoint, every number measured here or read from the training, evaluation and bench outputs.

    .venv/bin/python scripts/train_reference_network.py --export /tmp/ref.pt
    .venv/bin/python scripts/evaluate_reference_network.py --checkpoint /tmp/ref.pt \\
        --data runs/demo/fashion-mnist --count 1000 --out runs/evaluation
    scripts/bench-network.sh > /tmp/bench.txt
    .venv/bin/python scripts/make_model_card.py --checkpoint /tmp/ref.pt \\
        --train-dir ~/.cache/pspc/reference-train --eval-dir runs/evaluation --bench-file /tmp/bench.txt \\
        --out scripts/reference-network --threads 1

The checkpoint's training step is found by matching its weights with the EMA in TRAIN_DIR/checkpoint.pt or an
ema-STEP.pt snapshot (pass --step when training has moved on since the export). Samples, nearest neighbours and
heatmaps are cached under --cache-dir by checkpoint hash, so a second run only redraws. The heatmaps dominate
the time: about 18 s per draw and t on one thread of a 2-core CPU (4 t x 16 draws: about 20 minutes).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from pspc_net.card import HEATMAP_TS, CardInputs, command_line, make_card  # noqa: E402
from pspc_net.data import DEFAULT_DIR, load_fashion_mnist  # noqa: E402

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "pspc", "model-card")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="EMA export (train_reference_network.py --export)")
    p.add_argument("--train-dir", required=True, help="training folder: checkpoint.pt, loss.csv, train.log")
    p.add_argument("--eval-dir", required=True,
                   help="folder with mse.json (or mse.csv) of evaluate_reference_network.py")
    p.add_argument("--bench-file", required=True, help="output of scripts/bench-network.sh")
    p.add_argument("--out", required=True, help="card folder (scripts/reference-network)")
    p.add_argument("--step", type=int, default=None,
                   help="the checkpoint's step, when its weights are no longer in --train-dir")
    p.add_argument("--data-dir", default=None, help=f"Fashion-MNIST IDX folder (default {DEFAULT_DIR})")
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--test-count", type=int, default=1000, help="test images for the reference NN distances")
    p.add_argument("--heatmap-samples", type=int, default=16, help="draws of z per t for the heatmaps (default 16)")
    p.add_argument("--heatmap-seed", type=int, default=0)
    p.add_argument("--heatmap-t", type=float, nargs="+", default=list(HEATMAP_TS))
    p.add_argument("--cache-dir", default=DEFAULT_CACHE,
                   help=f"measurement cache (default {DEFAULT_CACHE}); '' disables")
    p.add_argument("--no-copy-checkpoint", action="store_true", help="do not copy the checkpoint into --out")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    if args.samples < 1 or args.test_count < 1 or args.heatmap_samples < 1:
        p.error("--samples, --test-count and --heatmap-samples must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    data_dir = args.data_dir or os.environ.get("PSPC_FASHION_MNIST_DIR", DEFAULT_DIR)
    metrics = make_card(CardInputs(
        checkpoint=args.checkpoint,
        train_dir=os.path.expanduser(args.train_dir),
        eval_dir=args.eval_dir,
        bench_file=args.bench_file,
        out=args.out,
        train_images=load_fashion_mnist("train", data_dir),
        test_images=load_fashion_mnist("test", data_dir),
        data_description=f"Fashion-MNIST from {data_dir}",
        step=args.step,
        samples=args.samples,
        sample_seed=args.sample_seed,
        test_count=args.test_count,
        heatmap_ts=tuple(args.heatmap_t),
        heatmap_samples=args.heatmap_samples,
        heatmap_seed=args.heatmap_seed,
        cache_dir=args.cache_dir or None,
        command=command_line([".venv/bin/python", "scripts/make_model_card.py", *(argv or sys.argv[1:])]),
        copy_checkpoint=not args.no_copy_checkpoint,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    ))
    gen, rat, cp, loc = (metrics[k] for k in ("generalization", "nn_ratio", "copies", "locality"))
    print(f"card written to {args.out}: step {metrics['checkpoint']['step']}, generalization "
          f"{'pass' if gen['passed'] else 'FAIL'}, sample/test NN median ratio {rat['dist']['ratio']:.3f} "
          f"(with flips {rat['dist_flip']['ratio']:.3f}), copies {cp['count']}, 50 % side "
          + " ".join(f"{s[0]:.1f}" for s in loc["mean_side"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
