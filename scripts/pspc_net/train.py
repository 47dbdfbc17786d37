"""Resumable EDM training loop for `EDMPrecond` (used by scripts/train_reference_network.py).

Every random draw (batch indices, x-flips, noise levels, noise) comes from one CPU
`torch.Generator` whose state is checkpointed with the model, EMA, optimizer and step, so a run
resumed from a checkpoint continues bit-identically to one that never stopped (same device and
thread count).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import math
import os
import time
from typing import Any, Callable

import torch

from .edm import P_MEAN, P_STD, edm_loss
from .model import EDMPrecond, atomic_save, export_dict, load_checkpoint

CHECKPOINT_NAME = "checkpoint.pt"
LOSS_CSV = "loss.csv"
TRAIN_STATE_VERSION = 1
PARKED_STATE_VERSION = 1
# Adam's moments are not parked: a run resumed from a parked state ramps its learning rate up again over
# this many steps while the fresh moments settle.
REWARM_STEPS = 200


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters fixed for the life of a run (stored in, and restored from, the checkpoint)."""

    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 500
    ema_halflife_steps: float = 1000.0
    # EMA half-life ramps up as ema_rampup * step early on, so early snapshots are not dominated by
    # the random initialisation (EDM's ema_rampup_ratio).
    ema_rampup: float = 0.1
    grad_clip: float = 10.0
    xflip: bool = True
    p_mean: float = P_MEAN
    p_std: float = P_STD
    seed: int = 0
    precision: str = "fp32"  # "fp32" or "bf16" (autocast of the U-Net; weights, loss, Adam stay float32)
    # Fraction of each batch whose noise level is log-uniform over the EDM grid's range [0.002, 80] instead of
    # log-normal (0: EDM's recipe exactly).
    p_uniform: float = 0.0
    # Learning-rate decay after warm-up: 0 keeps lr constant; d > 0 multiplies it by 1 / sqrt(max(step / d, 1))
    # (EDM2's inverse square root, so a run can still be extended at will).
    lr_decay_steps: int = 0
    # Export file (`load_checkpoint` format) whose weights start the run (net and EMA); "" for a random init.
    init_from: str = ""


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> bf16 where the hardware does bf16 natively (avx512_bf16/AMX on CPU, CUDA), else fp32."""
    if precision != "auto":
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


class Trainer:
    """Owns the network, its EMA, Adam, the RNG and the step count; `step()` trains one batch.

    `data` is uint8 `[N, 1, H, W]` (kept on `device`); images are mapped to [-1, 1] per batch.
    """

    def __init__(
        self,
        net_config: dict[str, Any],
        config: TrainConfig,
        data: torch.Tensor,
        device: torch.device | str = "cpu",
        load_init: bool = True,
    ):
        """`load_init=False` skips `config.init_from` (a resume overwrites the weights; the file may be gone)."""
        self.device = torch.device(device)
        self.config = config
        self.data = data.to(self.device)
        torch.manual_seed(config.seed)  # initial weights and the global RNG (dropout)
        self.net = EDMPrecond(**net_config)
        if config.init_from and load_init:
            start = load_checkpoint(config.init_from)
            if start.config != self.net.config:
                raise ValueError(
                    f"--init-from {config.init_from}: its network {start.config} differs from this run's {self.net.config}"
                )
            self.net.load_state_dict(start.state_dict())
        self.net = self.net.to(self.device).train()
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step_count = 0
        self.wall_seconds = 0.0
        # Step at which a run resumed from a parked state (fresh Adam moments) started its re-warm-up.
        self.rewarm_from: int | None = None

    # MARK: training

    def lr_at(self, step: int) -> float:
        """Linear warm-up over warmup_steps, then constant or 1 / sqrt decay (a run can be extended at will)."""
        lr = self.config.lr * min(1.0, (step + 1) / max(1, self.config.warmup_steps))
        if self.rewarm_from is not None:
            lr *= min(1.0, (step - self.rewarm_from + 1) / REWARM_STEPS)
        if self.config.lr_decay_steps > 0:
            lr /= math.sqrt(max(step / self.config.lr_decay_steps, 1.0))
        return lr

    def ema_beta(self, step: int) -> float:
        """Per-step EMA decay for half-life min(ema_halflife_steps, ema_rampup * (step + 1))."""
        halflife = self.config.ema_halflife_steps
        if self.config.ema_rampup > 0:
            halflife = min(halflife, self.config.ema_rampup * (step + 1))
        return 0.5 ** (1.0 / max(halflife, 1e-8))

    def _batch(self) -> torch.Tensor:
        g, n, b = self.generator, self.data.shape[0], self.config.batch_size
        idx = torch.randint(n, (b,), generator=g)
        x = self.data[idx.to(self.device)].to(torch.float32) / 127.5 - 1.0
        if self.config.xflip:
            flip = (torch.rand(b, generator=g) < 0.5).to(self.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self) -> float:
        """One optimisation step; returns the batch loss."""
        t0 = time.perf_counter()
        x = self._batch()
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step_count)
        with self._autocast():
            loss = edm_loss(
                self.net, x, self.generator, self.config.p_mean, self.config.p_std, self.config.p_uniform
            )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in self.net.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
        self.opt.step()
        beta = self.ema_beta(self.step_count)
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.net.parameters()):
                p_ema.lerp_(p, 1.0 - beta)
            for b_ema, b in zip(self.ema.buffers(), self.net.buffers()):
                b_ema.copy_(b)
        self.step_count += 1
        self.wall_seconds += time.perf_counter() - t0
        return float(loss.detach())

    # MARK: checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: plain types and tensors only (weights_only loadable)."""
        state = {
            "version": TRAIN_STATE_VERSION,
            "net_config": dict(self.net.config),
            "train_config": dataclasses.asdict(self.config),
            "step": self.step_count,
            "wall_seconds": self.wall_seconds,
            "net": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        if self.rewarm_from is not None:
            state["rewarm_from"] = self.rewarm_from
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != TRAIN_STATE_VERSION:
            raise ValueError(f"training checkpoint version {state.get('version')}, expected {TRAIN_STATE_VERSION}")
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step_count = int(state["step"])
        self.wall_seconds = float(state["wall_seconds"])
        self.rewarm_from = state.get("rewarm_from")

    def save(self, path: str) -> None:
        atomic_save(self.state_dict(), path)

    @classmethod
    def from_checkpoint(cls, path: str, data: torch.Tensor, device: torch.device | str = "cpu") -> "Trainer":
        state = torch.load(path, map_location="cpu", weights_only=True)
        trainer = cls(state["net_config"], TrainConfig(**state["train_config"]), data, device, load_init=False)
        trainer.load_state_dict(state)
        return trainer

    @classmethod
    def from_parked(cls, path: str, data: torch.Tensor, device: torch.device | str = "cpu") -> "Trainer":
        """Continue a parked run: weights, EMA, step, wall time and RNG as parked; Adam starts afresh and the
        learning rate ramps up again over REWARM_STEPS steps (so this resume is not bit-identical)."""
        state = read_parked_state(path)
        trainer = cls(state["net_config"], TrainConfig(**state["train_config"]), data, device, load_init=False)
        trainer.net.load_state_dict(state["net"])
        trainer.ema.load_state_dict(state["ema"])
        trainer.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        trainer.step_count = int(state["step"])
        trainer.wall_seconds = float(state["wall_seconds"])
        trainer.rewarm_from = trainer.step_count
        return trainer

    def export(self, path: str) -> None:
        """Write the EMA weights as a `load_checkpoint` file (config + float32 state_dict)."""
        atomic_save(export_dict(self.ema), path)


def read_training_checkpoint(path: str) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_parked_state(path: str) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("kind") != "parked":
        raise ValueError(f"{path} is not a parked training state (write one with --park)")
    if state.get("version") != PARKED_STATE_VERSION:
        raise ValueError(f"{path}: parked state version {state.get('version')}, expected {PARKED_STATE_VERSION}")
    return state


def park_checkpoint(ckpt_path: str, out_path: str) -> int:
    """Write the parked form of a training checkpoint: the state to commit between machines, less Adam's
    moments (half the bytes: a small-preset U-Net parks in about 15 MB, under the repository's 20 MB per file,
    where its checkpoint is 31 MB). Returns its step."""
    state = read_training_checkpoint(ckpt_path)
    del state["optimizer"]
    state.pop("cuda_rng", None)
    state.pop("rewarm_from", None)
    state["version"] = PARKED_STATE_VERSION
    state["kind"] = "parked"
    atomic_save(state, out_path)
    return int(state["step"])


def export_from_checkpoint(ckpt_path: str, out_path: str) -> int:
    """Write the EMA weights of a training checkpoint as an export file; returns its step."""
    state = read_training_checkpoint(ckpt_path)
    net = EDMPrecond(**state["net_config"])
    net.load_state_dict(state["ema"])
    atomic_save(export_dict(net), out_path)
    return int(state["step"])


class LossLog:
    """Appends `step,loss,wall_seconds` rows to loss.csv; on resume drops rows past the checkpoint."""

    def __init__(self, path: str, resume_step: int):
        self.path = path
        rows: list[list[str]] = []
        if os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.reader(f) if r and r[0] != "step" and int(r[0]) <= resume_step]
        with open(path + ".tmp", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss", "wall_seconds"])
            w.writerows(rows)
        os.replace(path + ".tmp", path)

    def append(self, step: int, loss: float, wall_seconds: float) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([step, f"{loss:.6f}", f"{wall_seconds:.1f}"])


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def run(
    trainer: Trainer,
    ckpt_dir: str,
    total_steps: int,
    log_every: int = 50,
    ckpt_every: int = 200,
    snapshot_every: int = 5000,
    should_stop: Callable[[], bool] = lambda: False,
    log: Callable[[str], None] = print,
) -> bool:
    """Train until `total_steps` or `should_stop()`; checkpoint every `ckpt_every` steps and at exit.

    Writes `ckpt_dir/checkpoint.pt`, `ckpt_dir/loss.csv` and EMA exports `ckpt_dir/ema-STEP.pt`
    every `snapshot_every` steps. Returns True when `total_steps` was reached.
    """
    ckpt_path = os.path.join(ckpt_dir, CHECKPOINT_NAME)
    loss_log = LossLog(os.path.join(ckpt_dir, LOSS_CSV), trainer.step_count)
    losses: list[float] = []
    window_start, window_steps = time.perf_counter(), 0
    while trainer.step_count < total_steps and not should_stop():
        losses.append(trainer.step())
        window_steps += 1
        step = trainer.step_count
        if step % log_every == 0 or step == total_steps:
            mean_loss = sum(losses) / len(losses)
            loss_log.append(step, mean_loss, trainer.wall_seconds)
            rate = window_steps / max(time.perf_counter() - window_start, 1e-9)
            eta = (total_steps - step) / rate
            log(
                f"step {step}/{total_steps} loss {mean_loss:.4f} {rate:.2f} steps/s "
                f"ETA {format_duration(eta)} lr {trainer.lr_at(step - 1):.2e}"
            )
            losses.clear()
            window_start, window_steps = time.perf_counter(), 0
        if step % ckpt_every == 0:
            trainer.save(ckpt_path)
        if snapshot_every > 0 and step % snapshot_every == 0:
            trainer.export(os.path.join(ckpt_dir, f"ema-{step:06d}.pt"))
    trainer.save(ckpt_path)
    return trainer.step_count >= total_steps
