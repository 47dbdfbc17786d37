"""Tests of the model card tooling (pspc_net.card, scripts/make_model_card.py): nearest neighbours, the copy
check, the generalization table's pass/fail, the record readers, and a whole card on a tiny fake setup."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from pspc_net.card import (
    CardInputs,
    check_row,
    evaluated_weights,
    file_sha256,
    copy_flags,
    copy_threshold,
    draw_samples,
    generalization_table,
    identify_step,
    make_card,
    moving_average,
    nearest_neighbours,
    nearest_with_flips,
    parse_bench,
    read_evaluation,
    read_train_log,
)
from pspc_net.edm import time_grid
from pspc_net.model import load_checkpoint, save_checkpoint
from pspc_net.train import TrainConfig, Trainer, run

SCRIPTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CARD_SCRIPT = os.path.join(SCRIPTS, "make_model_card.py")

BENCH_OUTPUT = """network: exported EMA weights of step 7200 to /tmp/x/ref.pt (7.7 MB)
network endpoint, batches of 256 1x28x28 images, cpu, 1 torch thread(s), median of 3:
  direct    net(z, t) in process             146.0 images/s  (  1753.4 ms per batch)
  protocol  DenoiseRequest over TCP          155.0 images/s  (  1651.6 ms per batch)
  protocol / direct time: 0.942; largest |difference| 0.00e+00
"""


def brute_force(queries: np.ndarray, refs: np.ndarray, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - refs[None, :, :]) ** 2).sum(-1))
    if exclude is not None:
        d[np.arange(len(queries)), exclude] = np.inf
    return d.min(1), d.argmin(1)


# MARK: nearest neighbours


@pytest.mark.parametrize("block", [1, 3, 7, 1000])
def test_nearest_neighbours_match_brute_force(block):
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(23, 13, generator=g) * 2 - 1
    queries = torch.rand(11, 13, generator=g) * 2 - 1
    queries[4] = refs[17]  # an exact copy
    refs[9] = refs[2]  # a duplicate reference: the lower index wins
    queries[5] = refs[2]
    dist, index = nearest_neighbours(queries, refs, block=block)
    bd, bi = brute_force(queries.numpy(), refs.numpy())
    np.testing.assert_allclose(dist, bd, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(index, bi)
    assert dist[4] == 0.0 and index[4] == 17
    assert dist[5] == 0.0 and index[5] == 2
    assert dist.dtype == np.float64


def test_nearest_neighbours_exclude_self_gives_the_sets_own_distances():
    g = torch.Generator().manual_seed(1)
    refs = torch.rand(17, 5, generator=g)
    refs[12] = refs[3]
    q = torch.tensor([3, 12, 0, 16])
    dist, index = nearest_neighbours(refs[q], refs, block=4, exclude=q)
    bd, bi = brute_force(refs[q].numpy(), refs.numpy(), exclude=q.numpy())
    np.testing.assert_allclose(dist, bd, rtol=1e-12)
    np.testing.assert_array_equal(index, bi)
    assert list(index[:2]) == [12, 3] and dist[0] == 0.0  # the duplicate, not itself


def test_nearest_neighbours_guards():
    assert nearest_neighbours(torch.zeros(0, 4), torch.zeros(3, 4))[0].shape == (0,)
    with pytest.raises(ValueError):
        nearest_neighbours(torch.zeros(2, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError):
        nearest_neighbours(torch.zeros(2, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        nearest_neighbours(torch.zeros(1, 4), torch.zeros(1, 4), exclude=torch.tensor([0]))


def test_nearest_with_flips_finds_the_flipped_copy():
    g = torch.Generator().manual_seed(2)
    refs = torch.rand(6, 3 * 5, generator=g)
    query = refs[4].reshape(3, 5).flip(-1).reshape(1, -1)
    nn = nearest_with_flips(query, refs, width=5)
    assert nn["dist_flip"][0] == 0.0 and nn["index_flip"][0] == 4 and nn["flipped"][0]
    assert nn["dist"][0] > 0
    bd, _ = brute_force(query.numpy(), refs.numpy())
    np.testing.assert_allclose(nn["dist"], bd, rtol=1e-12)


def test_copy_detection_flags_an_exact_training_image():
    g = torch.Generator().manual_seed(3)
    train = torch.rand(40, 4 * 4, generator=g) * 2 - 1
    test = torch.rand(30, 4 * 4, generator=g) * 2 - 1
    threshold = copy_threshold(nearest_with_flips(test, train, 4)["dist_flip"])
    assert threshold > 0
    samples = torch.stack([
        train[7],
        train[11].reshape(4, 4).flip(-1).reshape(-1),  # a mirrored copy is a copy
        train[20] + 0.01,  # a copy up to sampler error
        torch.rand(16, generator=g) * 2 - 1,
    ])
    nn = nearest_with_flips(samples, train, 4)
    assert list(copy_flags(nn["dist_flip"], threshold)) == [True, True, True, False]
    assert not copy_flags(nearest_with_flips(test, train, 4)["dist_flip"], threshold).all()


# MARK: generalization table


def row(t, network, empirical=1.0, gaussian=1.0):
    return {"t": t, "network": network, "empirical": empirical, "gaussian": gaussian}


def test_table_rows_pass_and_fail_on_the_issue_requirements():
    # t <= 1.92 (the grid's 1.9233 included): strictly below the empirical denoiser (the Gaussian does not matter).
    assert check_row(row(1.92329, 0.99, 1.0, 0.5))["passed"] is True
    assert check_row(row(1.92329, 1.0, 1.0, 0.5))["passed"] is False
    assert check_row(row(0.002, 2.0))["passed"] is False
    # t >= 3.26 (the grid's 3.2568 included), up to 80: within 2 % of the better baseline.
    assert check_row(row(3.25682, 1.02, 2.0, 1.0))["passed"] is True
    assert check_row(row(3.25682, 1.0201, 2.0, 1.0))["passed"] is False
    r = check_row(row(8.40094, 0.5, 1.0, 2.0))
    assert r["passed"] is True and r["best_baseline"] == 1.0 and r["ratio_to_best"] == 0.5
    assert check_row(row(80.0, 1.03))["passed"] is False
    # Between the two grid points: no requirement; the interval, when the evaluation has none, is None.
    for t in (2.0, 3.2):
        r = check_row(row(t, 5.0))
        assert r["passed"] is None and r["requirement"] == "none" and r["ratio_to_best_ci"] is None


def test_every_grid_t_has_a_requirement():
    assert all(check_row(row(float(t), 0.5))["passed"] is True for t in time_grid(18))


def test_table_overall_pass_needs_every_required_row():
    rows = [row(float(t), 0.5) for t in time_grid(18)]
    table = generalization_table(rows)
    assert table["passed"] is True
    assert [r["t"] for r in table["rows"]] == sorted((r["t"] for r in rows), reverse=True)
    rows[8] = row(rows[8]["t"], 1.2)  # t = 3.26
    assert generalization_table(rows)["passed"] is False
    assert generalization_table([row(80.0, 5.0)])["passed"] is False  # nothing checked is not a pass


def test_read_evaluation_prefers_json_and_reads_csv(tmp_path):
    (tmp_path / "mse.csv").write_text("t,network,empirical,gaussian\n80,0.39,0.35,0.35\n0.002,3e-06,0.07,4e-06\n")
    ev = read_evaluation(str(tmp_path))
    assert ev["count"] is None and ev["rows"][1] == row(0.002, 3e-06, 0.07, 4e-06)
    (tmp_path / "mse.json").write_text(json.dumps(
        {"checkpoint": "/x.pt", "count": 1000, "seed": 0, "rows": [row(3.0, 0.1, 0.2, 0.3)]}))
    ev = read_evaluation(str(tmp_path))
    assert ev["count"] == 1000 and ev["checkpoint"] == "/x.pt" and ev["rows"] == [row(3.0, 0.1, 0.2, 0.3)]
    with pytest.raises(FileNotFoundError):
        read_evaluation(str(tmp_path / "missing"))


# MARK: records


def test_parse_bench_reads_the_bench_output():
    b = parse_bench(BENCH_OUTPUT)
    assert (b["batch"], b["device"], b["threads"], b["direct_images_per_s"], b["protocol_images_per_s"]) == (
        256, "cpu", 1, 146.0, 155.0)
    notes = "# a note: 999 images/s\nnetwork endpoint, batches of 64 1x28x28 images, cuda:\n" \
            "  direct x 10 images/s\n  protocol y 12.5 images/s\n"
    b = parse_bench(notes)
    assert (b["batch"], b["threads"], b["direct_images_per_s"], b["protocol_images_per_s"]) == (64, None, 10.0, 12.5)
    with pytest.raises(ValueError):
        parse_bench("network endpoint, batches of 256 1x28x28 images, cpu\n  direct x 1 images/s\n")


def test_read_train_log_sums_segments_up_to_the_step(tmp_path):
    log = tmp_path / "train.log"
    log.write_text(
        "2026-01-01 10:00:00 new run in /x, preset small\n"
        "2026-01-01 10:00:00 network {} (1 parameters), {}, 60000 images, device cpu, threads 1\n"
        "2026-01-01 10:01:00 step 50/100 loss 1.0\n"
        "2026-01-01 10:02:00 step 100/100 loss 1.0\n"
        "2026-01-01 10:02:00 finished at step 100; checkpoint /x/checkpoint.pt\n"
        "2026-01-01 11:00:00 resumed /x/checkpoint.pt at step 50\n"
        "2026-01-01 11:00:00 network {} (1 parameters), {}, 60000 images, device cpu, threads 2\n"
        "2026-01-01 11:00:30 step 100/200 loss 1.0\n"
        "2026-01-01 11:01:30 step 150/200 loss 1.0\n"
        "2026-01-01 11:01:40 signal 15: saved checkpoint at step 160, exiting\n"
        "2026-01-01 12:00:00 resumed /x/checkpoint.pt at step 160\n"
        "2026-01-01 12:00:00 network {} (1 parameters), {}, 60000 images, device cuda, threads 16, gpu NVIDIA H200\n"
        "2026-01-01 12:00:10 step 200/200 loss 1.0\n"
    )
    full = read_train_log(str(log))
    assert full["wall_clock_seconds"] == 120 + 100 + 10 and full["threads"] == 16 and full["device"] == "cuda"
    assert [s["start_step"] for s in full["segments"]] == [0, 50, 160]
    upto = read_train_log(str(log), max_step=100)
    assert upto["wall_clock_seconds"] == 120 + 30
    assert [s["end_step"] for s in upto["segments"]] == [100, 100, None]
    # steps 50-100 of the first segment were redone by the resume: they count once, for the second
    assert full["steps_by_device"] == {"cpu, 1 torch threads": 50, "cpu, 2 torch threads": 110,
                                      "cuda (NVIDIA H200), 16 torch threads": 40}
    assert [(s["device"], s["threads"]) for s in full["segments"]] == [("cpu", 1), ("cpu", 2), ("cuda", 16)]


def test_moving_average_is_centred():
    np.testing.assert_allclose(moving_average(np.array([1.0, 3.0, 5.0, 7.0, 9.0]), 3), [2, 3, 5, 7, 8])
    np.testing.assert_allclose(moving_average(np.array([1.0, 3.0]), 1), [1, 3])


# MARK: a whole card on a tiny fake setup

SIDE = 12


def fake_images(n: int, seed: int, side: int = SIDE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, side, side), generator=g, dtype=torch.uint8)


def fake_setup(tmp_path, side: int = SIDE, steps: int = 6) -> dict[str, str]:
    """A tiny network trained a few steps (real loop, loss.csv, train.log), an evaluation and bench output."""
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    trainer = Trainer({"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [],
                       "emb_channels": 16, "img_resolution": side},
                      TrainConfig(batch_size=4, warmup_steps=2, seed=0), fake_images(32, 0, side))
    lines = ["2026-01-01 10:00:00 new run in x, preset tiny",
             "2026-01-01 10:00:00 network {} (1 parameters), {}, 32 images, device cpu, threads 1"]
    run(trainer, str(train_dir), steps, log_every=2, ckpt_every=2, snapshot_every=0,
        log=lambda msg: lines.append(f"2026-01-01 10:00:{len(lines):02d} {msg}"))
    (train_dir / "train.log").write_text("\n".join(lines) + "\n")
    ckpt = str(tmp_path / "ref.pt")
    trainer.export(ckpt)
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    rows = [row(float(t), 0.5 if float(t) != float(time_grid(18)[8]) else 3.0) for t in time_grid(18)]
    (eval_dir / "mse.json").write_text(json.dumps({"checkpoint": ckpt, "count": 50, "seed": 0, "rows": rows}))
    bench = tmp_path / "bench.txt"
    bench.write_text(BENCH_OUTPUT)
    return {"checkpoint": ckpt, "train_dir": str(train_dir), "eval_dir": str(eval_dir), "bench_file": str(bench)}


def assert_png(path: str) -> None:
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert os.path.getsize(path) > 1000, path


def test_card_on_a_tiny_fake_setup_writes_every_file(tmp_path):
    setup = fake_setup(tmp_path)
    train, test = fake_images(50, 1), fake_images(20, 2)
    test[3] = train[5]  # a test image that is a training image: distance 0
    out = tmp_path / "card"
    metrics = make_card(CardInputs(
        **setup, out=str(out), train_images=train, test_images=test, data_description="synthetic",
        samples=5, test_count=12, train_self_count=9, heatmap_ts=(0.03, 3.0), heatmap_samples=1,
        cache_dir=str(tmp_path / "cache"), command="make_model_card.py --fake", log=lambda msg: None))

    for name in ("loss", "samples", "samples-nearest", "heatmaps", "locality"):
        assert_png(str(out / "figures" / f"{name}.png"))
    assert (out / "reference-network.pt").read_bytes() == open(setup["checkpoint"], "rb").read()
    assert (out / "loss.csv").read_text() == open(os.path.join(setup["train_dir"], "loss.csv")).read()
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["checkpoint"]["step"] == 6 and "checkpoint.pt" in on_disk["checkpoint"]["step_source"]
    assert on_disk["network"]["parameters"] == metrics["network"]["parameters"] > 0
    assert on_disk["training"]["train_config"]["batch_size"] == 4
    assert on_disk["training"]["images_seen"] == 24
    assert on_disk["throughput"]["protocol_images_per_s"] == 155.0

    gen = on_disk["generalization"]
    assert gen["passed"] is False and gen["weights"]["same_as_card"] is True and gen["count"] == 50
    assert [r["passed"] for r in gen["rows"]].count(False) == 1

    smp, ref = on_disk["samples"], on_disk["reference_distances"]
    assert smp["count"] == 5 and len(smp["nn_distance"]) == 5 and smp["evaluations"] == 35
    assert ref["test_count"] == 12 and ref["test_nn"]["q0"] == 0.0
    unit = lambda x: x.reshape(len(x), -1).numpy() / 127.5 - 1  # noqa: E731
    assert on_disk["nn_ratio"]["dist"]["test_median"] == pytest.approx(
        np.median(brute_force(unit(test[:12]), unit(train))[0]))
    samples = torch.from_numpy(draw_samples(load_checkpoint(setup["checkpoint"]), 5, 0, 18))
    assert smp["nn_distance"] == pytest.approx(list(brute_force(samples.reshape(5, -1).numpy(), unit(train))[0]))
    cp = on_disk["copies"]
    assert cp["count"] == sum(d < cp["threshold"] for d in smp["nn_distance_flip"]) and cp["threshold"] >= 0
    loc = on_disk["locality"]
    assert loc["t"] == [0.03, 3.0] and len(loc["mean_side"]) == 2
    assert all(1 <= s <= 2 * SIDE - 1 for sides in loc["mean_side"] for s in sides)

    readme = (out / "README.md").read_text()
    for needle in ("figures/loss.png", "figures/samples.png", "figures/samples-nearest.png", "figures/heatmaps.png",
                   "figures/locality.png", "**FAIL**", "evaluated on the card's checkpoint",
                   "asks for 1000 test images", "155 images/s",
                   f"{metrics['network']['parameters']:,}", "make_model_card.py --fake"):
        assert needle in readme, needle
    assert "nan" not in readme.lower().replace("nanosecond", "")

    # A second run reads the samples and heatmaps from the cache and writes the same numbers.
    again = make_card(CardInputs(
        **setup, out=str(out), train_images=train, test_images=test, data_description="synthetic",
        samples=5, test_count=12, train_self_count=9, heatmap_ts=(0.03, 3.0), heatmap_samples=1,
        cache_dir=str(tmp_path / "cache"), command="make_model_card.py --fake", log=lambda msg: None))
    assert again["samples"]["nn_distance"] == smp["nn_distance"] and again["locality"] == loc


def test_the_table_is_tied_to_the_card_only_when_the_weights_can_be_checked(tmp_path):
    setup = fake_setup(tmp_path, steps=2)
    net, sha = load_checkpoint(setup["checkpoint"]), file_sha256(setup["checkpoint"])
    ev = read_evaluation(setup["eval_dir"])
    assert evaluated_weights(ev, sha, net, setup["train_dir"])["same_as_card"] is True
    other = tiny_other_net()
    w = evaluated_weights(ev, "f" * 64, other, setup["train_dir"])  # a card made from other weights
    assert w["same_as_card"] is False and w["step"] == 2  # the evaluated file is the training EMA of step 2
    # The export was rewritten in place after the evaluation: its path no longer says what was evaluated.
    later = os.path.getmtime(ev["source"]) + 10
    os.utime(setup["checkpoint"], (later, later))
    w = evaluated_weights(ev, sha, net, setup["train_dir"])
    assert w["same_as_card"] is None and "rewritten" in w["how"]
    assert evaluated_weights({**ev, "checkpoint_sha256": sha}, sha, net, setup["train_dir"])["same_as_card"] is True
    w = evaluated_weights({**ev, "checkpoint_sha256": "0" * 64}, sha, net, setup["train_dir"])
    assert w["same_as_card"] is False
    assert evaluated_weights({**ev, "checkpoint": None}, sha, net, setup["train_dir"])["same_as_card"] is None


def tiny_other_net():
    trainer = Trainer({"model_channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [],
                       "emb_channels": 16, "img_resolution": SIDE}, TrainConfig(seed=5), fake_images(4, 0))
    return trainer.ema


def test_card_needs_a_step_when_the_weights_are_unknown(tmp_path):
    setup = fake_setup(tmp_path, steps=2)
    save_checkpoint(tiny_other_net(), setup["checkpoint"])
    assert identify_step(torch.load(setup["checkpoint"], weights_only=True)["state_dict"], setup["train_dir"]) is None
    with pytest.raises(ValueError, match="--step"):
        make_card(CardInputs(**setup, out=str(tmp_path / "card"), train_images=fake_images(8, 1),
                             test_images=fake_images(8, 2), data_description="synthetic", log=lambda msg: None))


def write_idx(path: str, images: torch.Tensor) -> None:
    n, _, r, c = images.shape
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x00000803, n, r, c) + images.numpy().tobytes())


def test_cli_writes_a_card_from_idx_files(tmp_path):
    setup = fake_setup(tmp_path, side=28, steps=2)
    data = tmp_path / "fmnist"
    data.mkdir()
    write_idx(str(data / "train-images-idx3-ubyte.gz"), fake_images(30, 3, 28))
    write_idx(str(data / "t10k-images-idx3-ubyte.gz"), fake_images(10, 4, 28))
    out = tmp_path / "card"
    proc = subprocess.run(
        [sys.executable, CARD_SCRIPT, "--checkpoint", setup["checkpoint"], "--train-dir", setup["train_dir"],
         "--eval-dir", setup["eval_dir"], "--bench-file", setup["bench_file"], "--out", str(out),
         "--data-dir", str(data), "--samples", "2", "--test-count", "10", "--heatmap-samples", "1",
         "--heatmap-t", "3", "--cache-dir", "", "--no-copy-checkpoint"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "card written to" in proc.stdout and "generalization FAIL" in proc.stdout
    assert not (out / "reference-network.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"]["step"] == 2 and metrics["locality"]["t"] == [3.0]
    assert "--heatmap-t 3" in (out / "README.md").read_text()
