"""Networks behind the endpoint, each seen as an x-prediction EDM denoiser D(z, t) (docs/science.md sections 1, 6).

A `Denoiser` takes z float32 `[B, C, H, W]` (variance-exploding: z = x + t eps, x in [-1, 1]) and t
float32 `[B]`, both on its device, and returns D(z, t) float32 `[B, C, H, W]`. It is a plain function
of z, so `torch.func` can differentiate it (the gradient heatmaps).

Adapters:
- `edm`: a module called as `net(x, sigma)` that already is an EDM denoiser: our checkpoints
  (`load_checkpoint`, no pickled code) or an NVlabs/edm `network-snapshot-*.pkl`, whose `ema` entry
  unpickles only where NVlabs/edm's `dnnlib` and `torch_utils` are importable (put a clone of that
  repository on PYTHONPATH). Unpickling runs code from the file: load only pickles you trust. A
  torch.export archive (`.pt2`) of such a module works too.
- `vp-eps`: an epsilon-prediction network of a variance-preserving process, `eps(x_vp, timestep)`, as
  a TorchScript file or a torch.export archive (`.pt2`, batch dimension dynamic). The VP state is
  x_vp = alpha x + sigma_vp eps with alpha^2 + sigma_vp^2 = 1, so x_vp = alpha z with
  t = sigma_vp / alpha, i.e. alpha = 1 / sqrt(1 + t^2). The network's x-prediction
  x = (x_vp - sigma_vp eps_hat) / alpha (docs/science.md section 6) is then D(z, t) = z - t eps_hat, with
  eps_hat = eps(z / sqrt(1 + t^2), n(t)). The timestep n(t) inverts the model's discrete schedule
  t_n = sqrt((1 - alphabar_n) / alphabar_n), n = 0..T-1, by linear interpolation in log t (rounded to
  the nearest integer with `discrete`), clamped to [0, T-1] (outside [t_0, t_{T-1}] the network is
  used beyond its training range). An output of 2C channels (learned variance, as DiT) keeps its
  first C. Pixel-space networks only: a latent model (DiT on VAE latents) needs its decoder as well.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .model import load_checkpoint

ADAPTERS = ("edm", "vp-eps")
VP_SCHEDULES = ("linear", "cosine")


class Denoiser:
    """D(z, t) of some network: `shape` is (C, H, W), `device` where it runs, `describe` one line for logs."""

    shape: tuple[int, int, int]
    device: torch.device
    describe: str

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class EDMAdapter(Denoiser):
    """An EDM-preconditioned network `net(x, sigma)` (our `EDMPrecond` or NVlabs/edm's), sigma `[B]`."""

    def __init__(self, net: torch.nn.Module, shape: tuple[int, int, int], device: torch.device, describe: str):
        self.net, self.shape, self.device, self.describe = net.eval(), shape, device, describe

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(z, t).to(torch.float32)


def vp_alphas_cumprod(schedule: str = "linear", steps: int = 1000) -> np.ndarray:
    """alphabar_n, n = 0..steps-1, float64: "linear" is DDPM's betas linspace(1e-4, 0.02) scaled by
    1000 / steps (ADM, DiT, U-ViT); "cosine" is improved DDPM's (s = 0.008, betas clipped at 0.999)."""
    if steps < 2:
        raise ValueError("a VP schedule needs at least 2 steps")
    if schedule == "linear":
        scale = 1000.0 / steps
        betas = np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)
    elif schedule == "cosine":
        s = np.arange(steps + 1, dtype=np.float64) / steps
        f = np.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
    else:
        raise ValueError(f"unknown VP schedule {schedule!r}, expected one of {VP_SCHEDULES}")
    return np.cumprod(1 - betas)


class VPEpsAdapter(Denoiser):
    """An eps-prediction VP network `eps(x_vp, timestep)` as D(z, t) = z - t eps(z / sqrt(1 + t^2), n(t))."""

    def __init__(
        self,
        eps_net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        shape: tuple[int, int, int],
        device: torch.device,
        alphas_cumprod: np.ndarray,
        discrete: bool = False,
        describe: str = "vp-eps",
    ):
        self.eps_net, self.shape, self.device, self.discrete, self.describe = eps_net, shape, device, discrete, describe
        ab = np.asarray(alphas_cumprod, dtype=np.float64)
        # t_n increases with n; keep it as a float64 tensor for the interpolation.
        self.log_t_grid = torch.from_numpy(np.log(np.sqrt((1 - ab) / ab))).to(device)

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """n(t): the fractional index where log t falls on the schedule's log t_n, clamped to [0, T-1]."""
        grid = self.log_t_grid
        log_t = t.to(torch.float64).log().clamp(grid[0], grid[-1])
        hi = torch.searchsorted(grid, log_t).clamp(1, grid.numel() - 1)
        lo = hi - 1
        frac = (log_t - grid[lo]) / (grid[hi] - grid[lo])
        n = lo.to(torch.float64) + frac
        return (n.round() if self.discrete else n).to(torch.float32)

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float32)
        scale = (1 + t.to(torch.float64) ** 2).rsqrt().to(torch.float32)[:, None, None, None]
        eps = self.eps_net(z * scale, self.timestep(t)).to(torch.float32)
        c = self.shape[0]
        if eps.shape[1] == 2 * c:
            eps = eps[:, :c]
        return z - t[:, None, None, None] * eps


def _shape_of(net: torch.nn.Module, shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """(C, H, W): given, or from our checkpoint's config, or NVlabs/edm's img_channels / img_resolution."""
    if shape is not None:
        return shape
    config = getattr(net, "config", None)
    if isinstance(config, dict) and "img_channels" in config:
        r = int(config["img_resolution"])
        return int(config["img_channels"]), r, r
    if hasattr(net, "img_channels") and hasattr(net, "img_resolution"):
        r = int(net.img_resolution)
        return int(net.img_channels), r, r
    raise ValueError("cannot tell the network's image shape: pass --shape C,H,W")


def _frozen(net: torch.nn.Module) -> torch.nn.Module:
    """No parameter gradients: the heatmaps differentiate with respect to z only (and torch.func cannot
    transform a TorchScript module whose parameters require grad)."""
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_edm_pickle(path: str) -> torch.nn.Module:
    """The `ema` network of an NVlabs/edm snapshot pickle; needs that repository's code importable."""
    try:
        import dnnlib  # noqa: F401
        import torch_utils  # noqa: F401
    except ImportError as e:
        raise RuntimeError(
            f"{path}: an EDM pickle needs NVlabs/edm's dnnlib and torch_utils importable "
            f"(put a clone of that repository on PYTHONPATH): {e}"
        ) from None
    import pickle

    with open(path, "rb") as f:
        data = pickle.load(f)
    net = data["ema"] if isinstance(data, dict) and "ema" in data else data
    if not isinstance(net, torch.nn.Module):
        raise RuntimeError(f"{path}: holds no network (expected a dict with 'ema')")
    return net.to(torch.float32)


def load_denoiser(
    path: str,
    adapter: str = "edm",
    device: str | torch.device = "cpu",
    shape: tuple[int, int, int] | None = None,
    vp_schedule: str = "linear",
    vp_steps: int = 1000,
    vp_discrete: bool = False,
) -> Denoiser:
    """The network at `path` behind `adapter` on `device` (see the module doc for the formats)."""
    device = torch.device(device)
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}, expected one of {ADAPTERS}")
    if path.endswith(".pt2"):
        # An exported program is in inference form already (its module refuses eval()).
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(torch.export.load(path), device)
        net, what = _frozen(program.module()), "torch.export archive"
    elif adapter == "edm" and path.endswith(".pkl"):
        net, what = _frozen(load_edm_pickle(path).to(device).eval()), "NVlabs/edm pickle"
    elif adapter == "edm":
        net, what = _frozen(load_checkpoint(path).to(device).eval()), "pspc EDM checkpoint"
    else:
        net, what = _frozen(torch.jit.load(path, map_location=device).eval()), "TorchScript"
    if adapter == "edm":
        return EDMAdapter(net, _shape_of(net, shape), device, f"edm ({what} {path})")
    ab = vp_alphas_cumprod(vp_schedule, vp_steps)
    describe = f"vp-eps ({what} {path}, {vp_schedule} schedule, {vp_steps} steps)"
    return VPEpsAdapter(net, _shape_of(net, shape), device, ab, vp_discrete, describe)
