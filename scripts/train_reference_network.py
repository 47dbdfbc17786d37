#!/usr/bin/env python3
"""Train (or resume, or export) one of the reference EDM networks on Fashion-MNIST (--preset: U-Net, DiT, ResNet).

Resumes exactly from `--ckpt-dir/checkpoint.pt` when it exists: the model configuration and the
hyper-parameters then come from the checkpoint, and only --steps, --device, --threads and the
logging options apply. SIGTERM or SIGINT saves a checkpoint and exits with 128 + signal.

    .venv/bin/python scripts/train_reference_network.py --threads 1 --steps 28000   # the reference network
    .venv/bin/python scripts/train_reference_network.py --export reference-net.pt
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from pspc_net.data import DEFAULT_DIR, load_fashion_mnist  # noqa: E402
from pspc_net.model import PRESETS, count_parameters  # noqa: E402
from pspc_net.train import (  # noqa: E402
    CHECKPOINT_NAME,
    TrainConfig,
    Trainer,
    export_from_checkpoint,
    park_checkpoint,
    resolve_precision,
    run,
)

DEFAULT_CKPT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "pspc", "reference-train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=28000,
                   help="total optimisation steps of the run (default 28000: the reference network's)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument(
        "--ckpt-dir", default=DEFAULT_CKPT_DIR, help=f"checkpoints and loss.csv (default {DEFAULT_CKPT_DIR})"
    )
    p.add_argument("--export", metavar="PATH", help="write the latest checkpoint's EMA weights to PATH and exit")
    p.add_argument("--park", metavar="PATH",
                   help="write the latest checkpoint less Adam's moments (half the bytes, to commit) to PATH and exit")
    p.add_argument("--resume-parked", metavar="PATH",
                   help="with no checkpoint in --ckpt-dir, continue the run parked in PATH (Adam restarts, "
                        "the learning rate ramps up again over 200 steps)")
    p.add_argument("--data-dir", default=None, help=f"Fashion-MNIST IDX folder (default {DEFAULT_DIR})")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--snapshot-every", type=int, default=5000, help="EMA export ema-STEP.pt every N steps (0: never)")
    new = p.add_argument_group("new runs only (a resumed run keeps the checkpoint's values)")
    new.add_argument("--preset", choices=sorted(PRESETS), default="small", help="network size (default small)")
    new.add_argument("--batch-size", type=int, default=128)
    new.add_argument("--lr", type=float, default=1e-3)
    new.add_argument("--warmup-steps", type=int, default=500)
    new.add_argument("--ema-halflife-steps", type=float, default=1000.0)
    new.add_argument("--seed", type=int, default=0)
    new.add_argument("--p-uniform", type=float, default=0.0,
                     help="fraction of each batch with log-uniform noise levels over [0.002, 80] (default 0: EDM's)")
    new.add_argument("--lr-decay-steps", type=int, default=0,
                     help="after warm-up, lr / sqrt(max(step / D, 1)) (default 0: constant)")
    new.add_argument("--init-from", default="", metavar="EXPORT",
                     help="start from this exported network's weights (its configuration must match --preset)")
    new.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                     help="auto: bf16 autocast where the CPU/GPU supports bf16 natively")
    new.add_argument("--limit-images", type=int, default=None, help="train on the first N images only (tests)")
    args = p.parse_args(argv)
    if args.steps < 0 or args.log_every < 1 or args.ckpt_every < 1:
        p.error("--steps must be >= 0, --log-every and --ckpt-every >= 1")
    if not 0.0 <= args.p_uniform <= 1.0:
        p.error(f"--p-uniform must be in [0, 1], got {args.p_uniform}")
    if args.lr_decay_steps < 0:
        p.error("--lr-decay-steps must be >= 0")
    return args


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ckpt_path = os.path.join(args.ckpt_dir, CHECKPOINT_NAME)

    for out, write, what in ((args.export, export_from_checkpoint, "exported the EMA weights of"),
                             (args.park, park_checkpoint, "parked")):
        if not out:
            continue
        if not os.path.exists(ckpt_path):
            print(f"error: no checkpoint at {ckpt_path}", file=sys.stderr)
            return 1
        step = write(ckpt_path, out)
        log(f"{what} step {step} in {out} ({os.path.getsize(out) / 1e6:.1f} MB)")
        return 0

    if args.threads:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 1

    os.makedirs(args.ckpt_dir, exist_ok=True)
    lock = open(os.path.join(args.ckpt_dir, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"error: another training process is using {args.ckpt_dir}", file=sys.stderr)
        return 1

    data = load_fashion_mnist("train", args.data_dir)
    if args.limit_images:
        data = data[: args.limit_images]

    if os.path.exists(ckpt_path):
        trainer = Trainer.from_checkpoint(ckpt_path, data, device)
        log(f"resumed {ckpt_path} at step {trainer.step_count}")
    elif args.resume_parked:
        try:
            trainer = Trainer.from_parked(args.resume_parked, data, device)
        except (OSError, ValueError, RuntimeError) as error:
            print(f"error: --resume-parked {args.resume_parked}: {error}", file=sys.stderr)
            return 1
        log(f"resumed the parked run {args.resume_parked} at step {trainer.step_count} (Adam restarts)")
    else:
        config = TrainConfig(
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            ema_halflife_steps=args.ema_halflife_steps,
            seed=args.seed,
            precision=resolve_precision(args.precision, device),
            p_uniform=args.p_uniform,
            lr_decay_steps=args.lr_decay_steps,
            init_from=os.path.abspath(args.init_from) if args.init_from else "",
        )
        trainer = Trainer({**PRESETS[args.preset]}, config, data, device)
        log(f"new run in {args.ckpt_dir}, preset {args.preset}")
    log(
        f"network {trainer.net.config} ({count_parameters(trainer.net)} parameters), "
        f"{dataclasses.asdict(trainer.config)}, {data.shape[0]} images, device {device}, "
        f"threads {torch.get_num_threads()}"
        + (f", gpu {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    )

    stop_signal: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_signal.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    done = run(
        trainer,
        args.ckpt_dir,
        args.steps,
        log_every=args.log_every,
        ckpt_every=args.ckpt_every,
        snapshot_every=args.snapshot_every,
        should_stop=lambda: bool(stop_signal),
        log=log,
    )
    if stop_signal:
        log(f"signal {stop_signal[0]}: saved checkpoint at step {trainer.step_count}, exiting")
        return 128 + stop_signal[0]
    log(f"{'finished' if done else 'stopped'} at step {trainer.step_count}; checkpoint {ckpt_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
