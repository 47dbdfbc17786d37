"""Tests of the network adapters (pspc_net.adapters): EDM checkpoints and eps-prediction VP networks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pspc_net.adapters import EDMAdapter, VPEpsAdapter, load_denoiser, vp_alphas_cumprod
from pspc_net.model import EDMPrecond, save_checkpoint


def tiny_net(resolution: int = 8, seed: int = 0) -> EDMPrecond:
    torch.manual_seed(seed)
    net = EDMPrecond.from_preset("tiny", img_resolution=resolution)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_vp_schedules(schedule):
    ab = vp_alphas_cumprod(schedule, 1000)
    assert ab.shape == (1000,) and np.all(np.diff(ab) < 0) and 0 < ab[-1] < ab[0] < 1
    if schedule == "linear":
        assert ab[0] == pytest.approx(1 - 1e-4)
    with pytest.raises(ValueError):
        vp_alphas_cumprod("sqrt")


def schedule_t(ab: np.ndarray, n: torch.Tensor) -> torch.Tensor:
    """The inverse of VPEpsAdapter.timestep: t at fractional n, linear in log t between grid points."""
    log_t = np.log(np.sqrt((1 - ab) / ab))
    return torch.from_numpy(np.exp(np.interp(n.double().numpy(), np.arange(len(ab)), log_t)))


def test_timestep_inverts_the_schedule():
    ab = vp_alphas_cumprod("linear", 1000)
    adapter = VPEpsAdapter(lambda x, n: x, (1, 4, 4), torch.device("cpu"), ab)
    grid_t = torch.from_numpy(np.sqrt((1 - ab) / ab))
    n = adapter.timestep(grid_t[[0, 10, 500, 999]].float())
    np.testing.assert_allclose(n.numpy(), [0, 10, 500, 999], atol=2e-3)
    assert adapter.timestep(torch.tensor([1e-6, 1e6])).tolist() == [0.0, 999.0]  # clamped
    mid = adapter.timestep(torch.tensor([float(schedule_t(ab, torch.tensor([250.4])))]))
    assert float(mid) == pytest.approx(250.4, abs=1e-3)
    discrete = VPEpsAdapter(lambda x, n: x, (1, 4, 4), torch.device("cpu"), ab, discrete=True)
    assert float(discrete.timestep(torch.tensor([float(schedule_t(ab, torch.tensor([250.4])))]))) == 250.0


def test_vp_eps_of_an_edm_network_gives_back_the_edm_denoiser():
    """eps(x_vp, n) = (z - D(z, t)) / t with z = x_vp sqrt(1 + t^2), t = t(n): the adapter must return D."""
    net = tiny_net()
    ab = vp_alphas_cumprod("linear", 1000)

    def eps_net(x_vp, n):
        t = schedule_t(ab, n).to(torch.float32)
        z = x_vp * (1 + t.double() ** 2).sqrt().float()[:, None, None, None]
        return (z - net(z, t)) / t[:, None, None, None]

    adapter = VPEpsAdapter(eps_net, (1, 8, 8), torch.device("cpu"), ab)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.02, 0.3, 1.0, 5.0, 40.0])
    z = torch.rand(5, 1, 8, 8, generator=g) * 2 - 1 + t[:, None, None, None] * torch.randn(5, 1, 8, 8, generator=g)
    with torch.no_grad():
        expected = net(z, t)
        got = adapter(z, t)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-4 * float(t.max()))


def test_vp_eps_keeps_the_first_channels_of_a_learned_variance_output():
    ab = vp_alphas_cumprod("linear", 1000)
    adapter = VPEpsAdapter(lambda x, n: torch.cat([x, 100 + x]), (1, 2, 2), torch.device("cpu"), ab)
    adapter.eps_net = lambda x, n: torch.cat([torch.ones_like(x), 100 * torch.ones_like(x)], dim=1)
    z, t = torch.zeros(1, 1, 2, 2), torch.tensor([2.0])
    assert torch.allclose(adapter(z, t), torch.full((1, 1, 2, 2), -2.0))


class ScriptedEps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)) * (1 + n[:, None, None, None] / 1000)


def save_eps(module: torch.nn.Module, path: str) -> None:
    """TorchScript for .ts, a torch.export archive with a dynamic batch for .pt2."""
    if path.endswith(".pt2"):
        b = torch.export.Dim("b")
        example = (torch.randn(2, 1, 8, 8), torch.rand(2))
        torch.export.save(torch.export.export(module, example, dynamic_shapes=({0: b}, {0: b})), path)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated, still loaded
            torch.jit.script(module).save(path)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("suffix", [".ts", ".pt2"])
def test_load_vp_eps_network(tmp_path, suffix):
    torch.manual_seed(0)
    module = ScriptedEps().eval()
    path = str(tmp_path / f"eps{suffix}")
    save_eps(module, path)
    denoiser = load_denoiser(path, "vp-eps", "cpu", shape=(1, 8, 8))
    assert denoiser.shape == (1, 8, 8)
    z, t = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 10.0])
    with torch.no_grad():
        n = denoiser.timestep(t)
        expected = z - t[:, None, None, None] * module(z / (1 + t**2).sqrt()[:, None, None, None], n)
        np.testing.assert_allclose(denoiser(z, t).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="--shape"):
        load_denoiser(path, "vp-eps", "cpu")


def test_load_edm_checkpoint(tmp_path):
    net = tiny_net(resolution=12)
    path = str(tmp_path / "net.pt")
    save_checkpoint(net, path)
    denoiser = load_denoiser(path, "edm", "cpu")
    assert isinstance(denoiser, EDMAdapter) and denoiser.shape == (1, 12, 12)
    assert not any(p.requires_grad for p in denoiser.net.parameters())
    z, t = torch.randn(2, 1, 12, 12), torch.tensor([0.5, 3.0])
    with torch.no_grad():
        assert torch.equal(denoiser(z, t), net(z, t))


def test_edm_pickle_needs_the_edm_code(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dnnlib", None)  # not importable, whatever is installed
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(b"not opened")
    with pytest.raises(RuntimeError, match="dnnlib and torch_utils"):
        load_denoiser(str(path), "edm", "cpu")


def test_unknown_adapter():
    with pytest.raises(ValueError, match="unknown adapter"):
        load_denoiser("x.pt", "ddim")
