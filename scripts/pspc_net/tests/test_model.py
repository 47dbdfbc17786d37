"""Tests of the reference network package: preconditioning, EDM grid and sampler, checkpoints,
exact training resume, the IDX reader and the training script's CLI."""

from __future__ import annotations

import gzip
import math
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pspc_net.data import IDXFormatError, parse_idx_images, read_idx_images, to_unit
from pspc_net.edm import edm_loss, euler_sample, heun_sample, time_grid
from pspc_net.model import PRESETS, EDMPrecond, load_checkpoint, save_checkpoint
from pspc_net.train import (
    LOSS_CSV,
    REWARM_STEPS,
    TrainConfig,
    Trainer,
    export_from_checkpoint,
    park_checkpoint,
    read_parked_state,
    run,
)

SCRIPTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_SCRIPT = os.path.join(SCRIPTS, "train_reference_network.py")


def tiny_net(seed: int = 0) -> EDMPrecond:
    torch.manual_seed(seed)
    net = EDMPrecond.from_preset("tiny")
    # The zero-initialised output layer would make F == 0; randomise so outputs depend on weights.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def synthetic_images(n: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)


def idx_bytes(images: np.ndarray, magic: int = 0x00000803) -> bytes:
    n, r, c = images.shape
    return struct.pack(">IIII", magic, n, r, c) + images.astype(np.uint8).tobytes()


# MARK: preconditioning


class ZeroF(torch.nn.Module):
    """F == 1 everywhere and records its inputs, to check c_in and c_noise."""

    def forward(self, x, c_noise):
        self.x, self.c_noise = x, c_noise
        return torch.ones_like(x)


@pytest.mark.parametrize("t", [0.002, 0.5, 1.0, 80.0])
def test_preconditioning_matches_hand_computed_values(t):
    net = EDMPrecond.from_preset("tiny")
    net.model = ZeroF()
    sd = 0.5
    c_skip = sd**2 / (t**2 + sd**2)
    c_out = t * sd / math.sqrt(t**2 + sd**2)
    c_in = 1 / math.sqrt(sd**2 + t**2)
    z = torch.full((2, 1, 28, 28), 0.3)
    d = net(z, t)
    torch.testing.assert_close(d, torch.full_like(z, c_skip * 0.3 + c_out), rtol=1e-6, atol=0)
    torch.testing.assert_close(net.model.x, torch.full_like(z, c_in * 0.3), rtol=1e-6, atol=0)
    torch.testing.assert_close(net.model.c_noise, torch.full((2,), math.log(t) / 4), rtol=1e-6, atol=1e-7)


def test_preconditioning_at_t_one_exact():
    # sd = 0.5, t = 1: c_skip = 0.25/1.25 = 0.2, c_out = 0.5/sqrt(1.25), c_in = 1/sqrt(1.25), c_noise = 0.
    net = EDMPrecond.from_preset("tiny")
    c_skip, c_out, c_in, c_noise = net.coefficients(torch.tensor([1.0], dtype=torch.float64))
    assert c_skip.item() == pytest.approx(0.2, rel=1e-15)
    assert c_out.item() == pytest.approx(0.4472135954999579, rel=1e-15)
    assert c_in.item() == pytest.approx(0.8944271909999159, rel=1e-15)
    assert c_noise.item() == 0.0


def test_output_shape_and_per_sample_sigma():
    net = tiny_net()
    z = torch.randn(3, 1, 28, 28)
    out = net(z, torch.tensor([0.01, 1.0, 50.0]))
    assert out.shape == (3, 1, 28, 28) and out.dtype == torch.float32
    # Each sample only sees its own sigma.
    torch.testing.assert_close(net(z[1:2], 1.0), out[1:2], rtol=1e-5, atol=1e-6)


def test_small_preset_output_shape():
    net = EDMPrecond.from_preset("small").eval()
    assert net(torch.randn(2, 1, 28, 28), 2.0).shape == (2, 1, 28, 28)


# MARK: EDM grid, samplers, loss

PAPER_GRID_18 = ["80", "57.59", "40.79", "28.37", "19.35", "12.91", "8.40", "5.32", "3.26", "1.92", "1.09",
                 "0.585", "0.296", "0.140", "0.060", "0.023", "0.0075", "0.002"]


def test_time_grid_18_matches_paper():
    ts = time_grid(18)
    assert ts.dtype == torch.float64 and ts.shape == (18,)
    for t, text in zip(ts.tolist(), PAPER_GRID_18):
        decimals = len(text.split(".")[1]) if "." in text else 0
        assert abs(t - float(text)) <= 0.5 * 10**-decimals + 1e-12, (t, text)
    assert ts[0].item() == pytest.approx(80.0, rel=1e-14)
    assert ts[-1].item() == pytest.approx(0.002, rel=1e-12)
    assert torch.all(ts[1:] < ts[:-1])


def test_time_grid_rejects_single_step():
    with pytest.raises(ValueError):
        time_grid(1)


def gaussian_denoiser(s, calls):
    """Exact D for data ~ N(0, s^2): D(z, t) = s^2 / (s^2 + t^2) z."""

    def denoise(z, t):
        calls.append(t)
        assert z.dtype == torch.float32
        return s**2 / (s**2 + t**2) * z

    return denoise


def test_samplers_converge_on_gaussian_data_at_their_order():
    # The PF-ODE maps z(T) to z(T) s / sqrt(s^2 + T^2) exactly. Heun errors shrink ~4x per doubling
    # of n, Euler's ~2x; 18-step Heun is within 6%.
    s, calls = 0.5, []
    z0 = torch.full((1, 1, 2, 2), 80.0, dtype=torch.float64)
    exact = 80.0 * s / math.sqrt(s**2 + 80.0**2)

    def rel_error(sampler, n):
        return abs(sampler(gaussian_denoiser(s, calls), z0, time_grid(n))[0, 0, 0, 0].item() / exact - 1)

    heun = [rel_error(heun_sample, n) for n in (18, 36, 72)]
    euler = [rel_error(euler_sample, n) for n in (18, 36, 72)]
    assert heun[0] < 0.06
    assert 3.5 < heun[0] / heun[1] < 5 and 3.5 < heun[1] / heun[2] < 5
    assert 1.8 < euler[1] / euler[2] < 2.2


def test_sampler_evaluation_counts_and_dtype():
    calls = []
    z0 = torch.randn(2, 1, 28, 28, dtype=torch.float64) * 80
    out = heun_sample(gaussian_denoiser(0.5, calls), z0, time_grid(18))
    assert len(calls) == 35 and out.dtype == torch.float64 and calls[-1] == pytest.approx(0.002)
    calls.clear()
    euler_sample(gaussian_denoiser(0.5, calls), z0, time_grid(18))
    assert len(calls) == 18


def test_edm_loss_is_deterministic_given_generator():
    net = tiny_net()
    x = to_unit(synthetic_images(4))
    a = edm_loss(net, x, torch.Generator().manual_seed(3))
    b = edm_loss(net, x, torch.Generator().manual_seed(3))
    assert a.item() == b.item() and a.item() > 0


# MARK: checkpoints


def test_checkpoint_round_trip_identical_outputs(tmp_path):
    net = tiny_net()
    path = str(tmp_path / "net.pt")
    save_checkpoint(net, path)
    loaded = load_checkpoint(path)
    assert loaded.config == net.config
    z, sigma = torch.randn(2, 1, 28, 28), torch.tensor([0.1, 3.0])
    assert torch.equal(net(z, sigma), loaded(z, sigma))
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "version", "config", "state_dict"}
    assert all(v.dtype == torch.float32 for v in raw["state_dict"].values())


def test_load_checkpoint_rejects_other_files(tmp_path):
    path = str(tmp_path / "other.pt")
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a pspc-edm-unet checkpoint"):
        load_checkpoint(path)


def test_small_preset_export_fits_20_mb(tmp_path):
    path = str(tmp_path / "small.pt")
    save_checkpoint(EDMPrecond.from_preset("small"), path)
    assert os.path.getsize(path) <= 20e6


# MARK: training resume


def tiny_train_config() -> TrainConfig:
    return TrainConfig(batch_size=4, lr=1e-3, warmup_steps=2, ema_halflife_steps=2.0, seed=7, precision="fp32")


def test_resume_is_bit_identical(tmp_path):
    data = synthetic_images(16)
    straight = Trainer(PRESETS["tiny"], tiny_train_config(), data)
    losses_straight = [straight.step() for _ in range(5)]

    first = Trainer(PRESETS["tiny"], tiny_train_config(), data)
    losses = [first.step() for _ in range(3)]
    path = str(tmp_path / "ckpt.pt")
    first.save(path)
    torch.manual_seed(12345)  # disturb the global RNG: resume must restore it
    resumed = Trainer.from_checkpoint(path, data)
    assert resumed.step_count == 3
    losses += [resumed.step() for _ in range(2)]

    assert losses == losses_straight
    for a, b in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_run_writes_loss_csv_and_truncates_on_resume(tmp_path):
    data = synthetic_images(16)
    trainer = Trainer(PRESETS["tiny"], tiny_train_config(), data)
    assert run(trainer, str(tmp_path), 4, log_every=1, ckpt_every=2, snapshot_every=0, log=lambda _: None)
    with open(tmp_path / LOSS_CSV) as f:
        assert [line.split(",")[0] for line in f.read().split()] == ["step", "1", "2", "3", "4"]
    # A checkpoint from step 2 with rows logged up to step 4: resuming drops rows 3 and 4.
    trainer = Trainer(PRESETS["tiny"], tiny_train_config(), data)
    trainer.step(), trainer.step()
    trainer.save(str(tmp_path / "checkpoint.pt"))
    resumed = Trainer.from_checkpoint(str(tmp_path / "checkpoint.pt"), data)
    run(resumed, str(tmp_path), 3, log_every=1, snapshot_every=0, log=lambda _: None)
    with open(tmp_path / LOSS_CSV) as f:
        assert [line.split(",")[0] for line in f.read().split()] == ["step", "1", "2", "3"]
    out = str(tmp_path / "ema.pt")
    assert export_from_checkpoint(str(tmp_path / "checkpoint.pt"), out) == 3
    assert torch.equal(load_checkpoint(out)(data[:1].float(), 1.0), resumed.ema.eval()(data[:1].float(), 1.0))


def test_a_parked_run_continues_with_its_weights_draws_and_a_fresh_adam(tmp_path):
    data = synthetic_images(16)
    straight = Trainer(PRESETS["tiny"], tiny_train_config(), data)
    for _ in range(3):
        straight.step()
    ckpt, parked = str(tmp_path / "checkpoint.pt"), str(tmp_path / "parked.pt")
    straight.save(ckpt)
    assert park_checkpoint(ckpt, parked) == 3
    state = read_parked_state(parked)
    assert "optimizer" not in state and os.path.getsize(parked) < os.path.getsize(ckpt)

    torch.manual_seed(999)  # the parked RNG state must be restored
    resumed = Trainer.from_parked(parked, data)
    assert resumed.step_count == 3 and resumed.wall_seconds == straight.wall_seconds
    assert resumed.opt.state_dict()["state"] == {}
    for a, b in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)
    # The same batches and noise follow (the generator was parked); the learning rate ramps up again.
    assert torch.equal(resumed.generator.get_state(), straight.generator.get_state())
    assert resumed.lr_at(3) == pytest.approx(straight.lr_at(3) / REWARM_STEPS)
    assert resumed.lr_at(3 + REWARM_STEPS - 1) == straight.lr_at(3 + REWARM_STEPS - 1)
    resumed.step()
    assert resumed.step_count == 4 and resumed.opt.state_dict()["state"] != {}

    # An exact resume of the continued run keeps its ramp.
    resumed.save(ckpt)
    again = Trainer.from_checkpoint(ckpt, data)
    assert again.rewarm_from == 3 and again.lr_at(10) == resumed.lr_at(10)


def test_a_checkpoint_is_not_a_parked_state(tmp_path):
    trainer = Trainer(PRESETS["tiny"], tiny_train_config(), synthetic_images(8))
    ckpt = str(tmp_path / "checkpoint.pt")
    trainer.save(ckpt)
    with pytest.raises(ValueError, match="not a parked training state"):
        Trainer.from_parked(ckpt, synthetic_images(8))


# MARK: IDX reader


def test_idx_round_trip(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256
    path = tmp_path / "img.gz"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    x = read_idx_images(str(path))
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(x[:, 0], torch.from_numpy(images.astype(np.uint8)))
    assert to_unit(torch.tensor([0, 255], dtype=torch.uint8)).tolist() == [-1.0, 1.0]


def test_idx_rejects_corrupt_header(tmp_path):
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(idx_bytes(images, magic=0x00000801)))
    with pytest.raises(IDXFormatError, match=r"bad IDX magic 0x00000801, expected 0x00000803"):
        read_idx_images(str(path))


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00\x08", "too short"),
        (idx_bytes(np.zeros((2, 28, 28)))[:-1], "header says 2 images of 28x28"),
        (idx_bytes(np.zeros((2, 32, 32))), "images are 32x32, expected 28x28"),
    ],
)
def test_idx_rejects_bad_sizes(raw, message):
    with pytest.raises(IDXFormatError, match=message):
        parse_idx_images(raw, name="x")


def test_idx_rejects_truncated_gzip(tmp_path):
    path = tmp_path / "trunc.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28))))[:-10])
    with pytest.raises(IDXFormatError, match="corrupt gzip"):
        read_idx_images(str(path))


# MARK: command line


def write_fake_dataset(folder, n=32):
    os.makedirs(folder, exist_ok=True)
    images = synthetic_images(n).numpy()[:, 0]
    with open(os.path.join(folder, "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(gzip.compress(idx_bytes(images)))


def cli(*args):
    return [sys.executable, TRAIN_SCRIPT, "--threads", "1", "--device", "cpu", *args]


def test_cli_sigterm_saves_checkpoint_then_resumes_and_exports(tmp_path):
    data_dir, ckpt = str(tmp_path / "data"), str(tmp_path / "ckpt")
    write_fake_dataset(data_dir)
    common = ["--data-dir", data_dir, "--ckpt-dir", ckpt, "--preset", "tiny", "--batch-size", "4",
              "--log-every", "1", "--snapshot-every", "0", "--precision", "fp32"]
    proc = subprocess.Popen(cli("--steps", "100000", *common), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    for line in proc.stdout:  # wait until training is under way
        lines.append(line)
        if " step 3/" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "saved checkpoint at step" in out
    step = torch.load(os.path.join(ckpt, "checkpoint.pt"), weights_only=True)["step"]
    assert step >= 3

    done = subprocess.run(cli("--steps", str(step + 2), *common), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed" in done.stdout and f"finished at step {step + 2}" in done.stdout

    out_path = str(tmp_path / "exported.pt")
    exp = subprocess.run([sys.executable, TRAIN_SCRIPT, "--ckpt-dir", ckpt, "--export", out_path],
                         capture_output=True, text=True, timeout=60)
    assert exp.returncode == 0, exp.stderr
    assert load_checkpoint(out_path).config["model_channels"] == PRESETS["tiny"]["model_channels"]


def test_cli_parks_a_run_and_continues_it_in_an_empty_folder(tmp_path):
    data_dir, first, second = str(tmp_path / "data"), str(tmp_path / "first"), str(tmp_path / "second")
    write_fake_dataset(data_dir)
    common = ["--data-dir", data_dir, "--preset", "tiny", "--batch-size", "4", "--log-every", "1",
              "--snapshot-every", "0", "--precision", "fp32"]
    done = subprocess.run(cli("--steps", "3", "--ckpt-dir", first, *common), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    parked = str(tmp_path / "parked.pt")
    park = subprocess.run([sys.executable, TRAIN_SCRIPT, "--ckpt-dir", first, "--park", parked],
                          capture_output=True, text=True, timeout=60)
    assert park.returncode == 0 and "parked step 3" in park.stdout, park.stdout + park.stderr

    go_on = subprocess.run(cli("--steps", "5", "--ckpt-dir", second, "--resume-parked", parked, *common),
                           capture_output=True, text=True, timeout=60)
    assert go_on.returncode == 0, go_on.stdout + go_on.stderr
    assert "resumed the parked run" in go_on.stdout and "finished at step 5" in go_on.stdout

    wrong = subprocess.run(cli("--steps", "5", "--ckpt-dir", str(tmp_path / "third"), "--resume-parked",
                               os.path.join(first, "checkpoint.pt"), *common), capture_output=True, text=True,
                           timeout=60)
    assert wrong.returncode == 1 and "not a parked training state" in wrong.stderr
