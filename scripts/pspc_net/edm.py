"""EDM time grid, deterministic samplers and training loss (docs/science.md section 1; Karras et al. 2022)."""

from __future__ import annotations

import math
from typing import Callable

import torch

T_MAX = 80.0
T_MIN = 0.002
RHO = 7.0
P_MEAN = -1.2
P_STD = 1.2

# A denoiser D(z, t): z float32 `[B, C, H, W]`, t a float; returns E[x | z, t] with z's shape.
Denoiser = Callable[[torch.Tensor, float], torch.Tensor]


def time_grid(n: int, rho: float = RHO, t_max: float = T_MAX, t_min: float = T_MIN) -> torch.Tensor:
    """t_i = (t_max^(1/rho) + i/(n-1) (t_min^(1/rho) - t_max^(1/rho)))^rho, i = 0..n-1, float64, descending."""
    if n < 2:
        raise ValueError(f"the EDM grid needs n >= 2 steps, got {n}")
    i = torch.arange(n, dtype=torch.float64)
    a, b = t_max ** (1 / rho), t_min ** (1 / rho)
    return (a + i / (n - 1) * (b - a)) ** rho


def _d(denoise: Denoiser, z: torch.Tensor, t: float) -> torch.Tensor:
    """PF-ODE slope d = (z - D(z, t)) / t in float64."""
    return (z - denoise(z.to(torch.float32), t).to(torch.float64)) / t


@torch.no_grad()
def heun_sample(denoise: Denoiser, z: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """EDM deterministic Heun sampler (Algorithm 1, no churn) from z at ts[0] to t = 0.

    z `[B, C, H, W]` is the initial state (e.g. t_max * eps); ts descending. Each step to t_next > 0
    averages d with d' at t_next; the last step, to 0, is Euler: 2n - 1 evaluations for n grid points.
    Sampler math is float64; the denoiser sees float32. Returns float64.
    """
    z = z.to(torch.float64)
    ts = [float(t) for t in ts] + [0.0]
    for t, t_next in zip(ts[:-1], ts[1:]):
        d = _d(denoise, z, t)
        z_next = z + (t_next - t) * d
        if t_next > 0:
            d_prime = _d(denoise, z_next, t_next)
            z_next = z + (t_next - t) * (0.5 * d + 0.5 * d_prime)
        z = z_next
    return z


@torch.no_grad()
def euler_sample(denoise: Denoiser, z: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Euler PF-ODE sampler z <- z + (t_next - t) d from ts[0] to t = 0, float64 (n evaluations)."""
    z = z.to(torch.float64)
    ts = [float(t) for t in ts] + [0.0]
    for t, t_next in zip(ts[:-1], ts[1:]):
        z = z + (t_next - t) * _d(denoise, z, t)
    return z


def net_denoiser(net: torch.nn.Module) -> Denoiser:
    """Wrap an `EDMPrecond` as a `Denoiser` on the net's device."""
    device = next(net.parameters()).device

    def denoise(z: torch.Tensor, t: float) -> torch.Tensor:
        return net(z.to(device), t).to(z.device)

    return denoise


def edm_loss(
    net: torch.nn.Module,
    x: torch.Tensor,
    generator: torch.Generator,
    p_mean: float = P_MEAN,
    p_std: float = P_STD,
    p_uniform: float = 0.0,
    t_min: float = T_MIN,
    t_max: float = T_MAX,
) -> torch.Tensor:
    """EDM training loss, mean over batch and pixels of w(t) ||D(x + t eps, t) - x||^2.

    ln t ~ N(p_mean, p_std^2), except for a fraction `p_uniform` of the batch whose ln t is uniform on
    [ln t_min, ln t_max]: EDM's log-normal alone almost never draws t >= 20 (P(t > 20) = 2e-4 at the
    defaults), where the sampler starts. w(t) = (t^2 + sd^2) / (t sd)^2. The random draws come from
    `generator` (on the CPU) so training is reproducible and resumable on any device; with p_uniform = 0
    the draws are exactly EDM's.
    """
    b = x.shape[0]
    log_sigma = torch.randn(b, generator=generator, dtype=torch.float32) * p_std + p_mean
    if p_uniform > 0:
        uniform = torch.rand(b, generator=generator, dtype=torch.float32) < p_uniform
        lo, hi = math.log(t_min), math.log(t_max)
        log_uniform = lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float32)
        log_sigma = torch.where(uniform, log_uniform, log_sigma)
    sigma = log_sigma.exp()
    eps = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    sigma, eps = sigma.to(x.device), eps.to(x.device)
    sd = net.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    s = sigma[:, None, None, None]
    d = net(x + s * eps, sigma)
    return (weight[:, None, None, None] * (d - x) ** 2).mean()
