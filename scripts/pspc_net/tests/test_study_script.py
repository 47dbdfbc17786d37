"""scripts/study.sh end to end at toy sizes: two named networks, every step, the files RESULTS.md is written from,
a resumed second run that recomputes nothing, and a refused network list.

Needs the built `pspc` binary (see test_pspc_serve.pspc_binary; scripts/test.sh builds it first)."""

from __future__ import annotations

import csv
import os
import subprocess

import pytest
import torch

from pspc_net.model import EDMPrecond, save_checkpoint

from .test_pspc_serve import REPO, pspc_binary, run_pspc

SCRIPT = os.path.join(REPO, "scripts", "study.sh")
STEPS = ["heatmaps", "forward-train", "forward-test", "forward-held-out", "reverse", "calibration", "samples",
         "report"]


def fashion_net(seed: int) -> EDMPrecond:
    torch.manual_seed(seed)
    net = EDMPrecond.from_preset("tiny", img_resolution=28)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def study(out: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, out], env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    data = str(root / "data")
    run_pspc("ingest", "--source", "fashion-mnist:train", "--limit", "150", "--shards", "3", "--out", data)
    networks = []
    for name, seed in (("first", 0), ("second", 1)):
        path = str(root / f"{name}.pt")
        save_checkpoint(fashion_net(seed), path)
        networks.append(f"{name}={path}")
    env = {
        **os.environ,
        "PSPC_BIN": pspc_binary(),
        "PSPC_STUDY_NETWORKS": ",".join(networks),
        "PSPC_STUDY_DATA": data,
        "PSPC_STUDY_QUERIES": "2",
        "PSPC_STUDY_TRAJECTORIES": "2",
        "PSPC_STUDY_HEATMAP_SAMPLES": "1",
        "PSPC_STUDY_SAMPLES": "2",
        "PSPC_STUDY_GRID": "edm:3",
        "PSPC_STUDY_PATCH_SIZES": "3,7",
        "PSPC_STUDY_LAMBDAS": "0.5",
    }
    out = str(root / "study")
    first = study(out, env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    return {"root": root, "out": out, "env": env, "log": first.stdout}


def rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_step_runs_and_is_timed(toy_study):
    timed = rows(os.path.join(toy_study["out"], "timings.csv"))
    assert [row["step"] for row in timed] == STEPS
    assert all(int(row["seconds"]) >= 0 for row in timed)
    assert os.path.isfile(os.path.join(toy_study["out"], "report", "index.html"))


def test_every_method_is_compared_with_both_networks_and_each_network_with_the_other(toy_study):
    table = rows(os.path.join(toy_study["out"], "forward-test", "networks.csv"))
    pairs = {(row["label"], row["network"]) for row in table}
    assert ("network second", "network first") in pairs and ("network first", "network second") in pairs
    for label in ("empirical", "gaussian", "pspc-square s=3", "pspc-flex lambda=0.5"):
        for network in ("network first", "network second"):
            assert (label, network) in pairs, (label, network, sorted(pairs))
    assert any(label.startswith("cfdm") for label, _ in pairs)
    for row in table:
        assert float(row["ci_low"]) <= float(row["mse"]) <= float(row["ci_high"])
    # Each network has its own heatmaps; the first one's make the PSPC-Flex masks.
    for name in ("first", "second"):
        assert os.path.isfile(os.path.join(toy_study["out"], "heatmaps", name, "heatmaps.npy"))


def test_the_calibration_is_judged_on_the_held_out_queries_with_the_whole_image_among_the_candidates(toy_study):
    held_out = rows(os.path.join(toy_study["out"], "calibration", "held-out.csv"))
    assert {row["method"] for row in held_out} == {"pspc-square", "pspc-flex"}
    assert len(held_out) == 2 * 3  # both methods at each of the 3 grid t
    for row in held_out:
        assert float(row["mse_held_out_best"]) <= float(row["mse_held_out"])
    candidates = {(row["method"], row["param"]) for row in rows(os.path.join(toy_study["out"], "calibration",
                                                                              "calibration.csv"))}
    assert ("pspc-square", "28") in candidates and ("pspc-flex", "1.0") in candidates, sorted(candidates)


def computed_files(out: str) -> dict[str, float]:
    """Modification times of every sweep's computed units (outputs/, parts/) and every sample file."""
    times = {}
    for run in ("forward-train", "forward-test", "forward-held-out", "reverse", "samples"):
        for folder, _, names in os.walk(os.path.join(out, run)):
            if any(part in os.path.relpath(folder, out).split(os.sep)[1:2] for part in ("outputs", "parts", "samples")):
                for name in names:
                    times[os.path.join(folder, name)] = os.path.getmtime(os.path.join(folder, name))
    return times


def test_a_second_run_resumes_without_recomputing(toy_study):
    out = toy_study["out"]
    results = os.path.join(out, "forward-train", "results.csv")
    before, units = open(results, "rb").read(), computed_files(out)
    assert len(units) > 10
    again = study(out, toy_study["env"])
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert open(results, "rb").read() == before
    assert computed_files(out) == units


def test_a_network_that_is_not_a_file_is_refused(toy_study):
    env = {**toy_study["env"], "PSPC_STUDY_NETWORKS": "first=/nonexistent/net.pt"}
    refused = study(str(toy_study["root"] / "refused"), env)
    assert refused.returncode == 2
    assert "first=/nonexistent/net.pt is not NAME=CHECKPOINT of a file" in refused.stderr
