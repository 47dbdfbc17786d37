"""Tests of the network family (U-Net, DiT, local ResNet) and of the shared training recipe's additions:
log-uniform noise levels, the inverse square-root learning-rate decay and starting from an export."""

from __future__ import annotations

import math

import pytest
import torch

from pspc_net.edm import T_MAX, T_MIN, edm_loss
from pspc_net.model import PRESETS, EDMPrecond, LocalResNet, load_checkpoint, save_checkpoint
from pspc_net.train import TrainConfig, Trainer


def randomised(net: EDMPrecond, seed: int = 0) -> EDMPrecond:
    """Zero-initialised output layers would make F == 0; perturb every weight so outputs depend on them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


@pytest.mark.parametrize("preset", ["dit-tiny", "resnet-tiny", "tiny"])
def test_every_architecture_round_trips_through_a_checkpoint(tmp_path, preset):
    net = randomised(EDMPrecond.from_preset(preset))
    path = tmp_path / "net.pt"
    save_checkpoint(net, str(path))
    loaded = load_checkpoint(str(path))
    assert loaded.config == net.config
    assert loaded.arch == PRESETS[preset].get("arch", "unet")
    z = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(z, 0.7), net(z, 0.7))


def test_unet_configs_keep_their_original_form():
    # Checkpoints written before there was a choice of architecture have no "arch" key and still load.
    assert "arch" not in EDMPrecond.from_preset("small").config
    assert EDMPrecond.from_preset("dit").config["arch"] == "dit"


@pytest.mark.parametrize("preset", ["dit-tiny", "resnet-tiny"])
def test_new_architectures_start_as_the_skip_connection(preset):
    # adaLN-Zero (DiT) and the zero output convolution (ResNet): F == 0 at init, so D = c_skip z.
    net = EDMPrecond.from_preset(preset).eval()
    z = torch.randn(2, 1, 28, 28)
    t = 1.5
    c_skip = 0.25 / (t * t + 0.25)
    with torch.no_grad():
        torch.testing.assert_close(net(z, t), c_skip * z, rtol=0, atol=1e-6)


@pytest.mark.parametrize("preset", ["dit", "resnet"])
def test_full_presets_denoise_colour_and_per_sample_sigma(preset):
    net = EDMPrecond.from_preset(preset, img_channels=3, img_resolution=16).eval()
    z = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = net(z, torch.tensor([0.1, 30.0]))
    assert out.shape == z.shape and torch.isfinite(out).all()


def test_resnet_receptive_field_is_bounded_by_its_depth():
    net = randomised(EDMPrecond(arch="resnet", model_channels=8, num_blocks=2, emb_channels=16))
    field = net.model.receptive_field
    assert isinstance(net.model, LocalResNet) and field == 13
    z = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    bumped = z.clone()
    bumped[0, 0, 14, 14] += 1.0
    with torch.no_grad():
        # Only F changes (the skip term changes at the bumped pixel alone).
        diff = (net.model(bumped, torch.zeros(1)) - net.model(z, torch.zeros(1))).abs()[0, 0]
    half = field // 2
    changed = (diff > 0).nonzero()
    assert changed.numel() > 0
    assert (changed - 14).abs().max().item() == half  # reaches the field's edge, not beyond
    outside = diff.clone()
    outside[14 - half : 15 + half, 14 - half : 15 + half] = 0
    assert outside.max().item() == 0.0


def test_dit_rejects_sides_that_are_not_multiples_of_the_patch():
    with pytest.raises(ValueError, match="multiple of the patch size"):
        EDMPrecond(arch="dit", img_resolution=27, patch_size=2)


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        EDMPrecond(arch="vit")


class RecordSigma(torch.nn.Module):
    sigma_data = 0.5

    def forward(self, x, sigma):
        self.sigma = sigma
        return x


def draw_sigmas(p_uniform: float, n: int = 4096, seed: int = 0) -> torch.Tensor:
    net = RecordSigma()
    edm_loss(net, torch.zeros(n, 1, 2, 2), torch.Generator().manual_seed(seed), p_uniform=p_uniform)
    return net.sigma


def test_log_uniform_fraction_covers_the_whole_grid():
    lognormal = draw_sigmas(0.0)
    mixed = draw_sigmas(0.1)
    assert (lognormal > 20).float().mean().item() < 0.002
    uniform = draw_sigmas(1.0)
    assert uniform.min().item() >= T_MIN * (1 - 1e-6) and uniform.max().item() <= T_MAX * (1 + 1e-6)
    # ln t uniform on [ln 0.002, ln 80]: P(t > 20) = ln(4) / ln(40000) = 0.131.
    assert abs((uniform > 20).float().mean().item() - math.log(4) / math.log(T_MAX / T_MIN)) < 0.02
    assert 0.007 < (mixed > 20).float().mean().item() < 0.02


def test_without_the_uniform_fraction_the_draws_are_edms():
    net = RecordSigma()
    g = torch.Generator().manual_seed(3)
    edm_loss(net, torch.zeros(8, 1, 2, 2), g)
    expected = (torch.randn(8, generator=torch.Generator().manual_seed(3)) * 1.2 - 1.2).exp()
    assert torch.equal(net.sigma, expected)


def test_learning_rate_warms_up_then_decays_as_inverse_square_root():
    data = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    trainer = Trainer(PRESETS["tiny"], TrainConfig(lr=1e-3, warmup_steps=10, lr_decay_steps=100), data)
    assert trainer.lr_at(4) == pytest.approx(5e-4)
    assert trainer.lr_at(50) == pytest.approx(1e-3)
    assert trainer.lr_at(400) == pytest.approx(5e-4)
    assert trainer.lr_at(1600) == pytest.approx(2.5e-4)
    constant = Trainer(PRESETS["tiny"], TrainConfig(lr=1e-3, warmup_steps=10), data)
    assert constant.lr_at(10_000) == pytest.approx(1e-3)


def test_a_run_can_start_from_an_export(tmp_path):
    start = randomised(EDMPrecond.from_preset("tiny"), seed=5)
    path = tmp_path / "start.pt"
    save_checkpoint(start, str(path))
    data = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    trainer = Trainer(PRESETS["tiny"], TrainConfig(init_from=str(path)), data)
    for name, value in start.state_dict().items():
        assert torch.equal(trainer.net.state_dict()[name], value)
        assert torch.equal(trainer.ema.state_dict()[name], value)
    with pytest.raises(ValueError, match="differs from this run's"):
        Trainer(PRESETS["resnet-tiny"], TrainConfig(init_from=str(path)), data)
