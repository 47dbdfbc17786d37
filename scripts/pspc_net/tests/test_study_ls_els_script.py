"""scripts/study-ls-els.sh end to end at toy sizes: every step timed, LS and ELS calibrated with the whole-image
window among the candidates, the sample comparison of every method of Kamb & Ganguli's table (LS, ELS,
PSPC-Square, PSPC-Flex, the optimal denoiser) against the network under both solvers, a resumed run that
gives the same files, a refused grid, and scripts/ls-els-tables.py's tables of the run.

Needs the built `pspc` binary (see test_pspc_serve.pspc_binary; scripts/test.sh builds it first)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from pspc_net.model import save_checkpoint

from .test_pspc_serve import REPO, pspc_binary
from .test_study_script import fashion_net

SCRIPT = os.path.join(REPO, "scripts", "study-ls-els.sh")
STEPS = ["heatmaps", "forward", "reverse", "calibration", "samples-euler", "samples-heun", "report"]


def study(out: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, out], env=env, capture_output=True, text=True, timeout=1200)


def rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study-ls-els")
    network = str(root / "net.pt")
    save_checkpoint(fashion_net(0), network)
    env = {
        **os.environ,
        "PSPC_BIN": pspc_binary(),
        "PSPC_NETWORK": network,
        "PSPC_STUDY_TRAIN": "120",
        "PSPC_STUDY_QUERIES": "2",
        "PSPC_STUDY_TRAJECTORIES": "1",
        "PSPC_STUDY_SAMPLES": "3",
        "PSPC_STUDY_HEATMAP_SAMPLES": "1",
        "PSPC_STUDY_GRID": "edm:3",
        "PSPC_STUDY_PATCH_SIZES": "3",
        "PSPC_STUDY_LAMBDAS": "0.5",
    }
    out = str(root / "study")
    first = study(out, env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    return {"root": root, "out": out, "env": env}


def test_every_step_runs_and_is_timed(toy_study):
    timed = rows(os.path.join(toy_study["out"], "timings.csv"))
    assert [row["step"] for row in timed] == STEPS
    assert os.path.isfile(os.path.join(toy_study["out"], "report", "index.html"))


def test_the_whole_image_window_is_a_candidate_and_each_schedule_has_a_window_per_t(toy_study):
    cal = os.path.join(toy_study["out"], "calibration")
    candidates = {(row["method"], row["param"]) for row in rows(os.path.join(cal, "calibration.csv"))}
    for method in ("ls", "els"):
        assert (method, "3") in candidates and (method, "55") in candidates, sorted(candidates)
        with open(os.path.join(cal, f"{method}-schedule.json")) as f:
            schedule = json.load(f)
        assert len(schedule["values"]) == 3 and set(schedule["values"]) <= {3, 55}, schedule


def test_every_machine_is_compared_with_the_network_under_both_solvers(toy_study):
    for solver in ("euler", "heun"):
        table = rows(os.path.join(toy_study["out"], f"samples-{solver}", "similarity.csv"))
        against = {row["method_a"] for row in table if row["method_b"] == "network"}
        for method in ("empirical", "ls", "els"):
            assert any(label.startswith(method) for label in against), (method, sorted(against))
        assert any(label.startswith("pspc-square") for label in against), sorted(against)
        assert any(label.startswith("pspc-flex") for label in against), sorted(against)
        for row in table:
            if row["method_b"] == "network" and row["method_a"] != "network":
                low, median, high = (float(row[k]) for k in
                                     ("pearson_median_ci_low", "pearson_median", "pearson_median_ci_high"))
                assert -1 <= low <= median <= high <= 1, row


def test_a_second_run_resumes_without_recomputing(toy_study):
    out = toy_study["out"]
    watched = [os.path.join(out, "forward", "results.csv"), os.path.join(out, "samples-heun", "similarity.csv")]
    before = [open(p, "rb").read() for p in watched]
    again = study(out, toy_study["env"])
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert [open(p, "rb").read() for p in watched] == before


def test_a_grid_that_is_not_edm_is_refused(toy_study):
    env = {**toy_study["env"], "PSPC_STUDY_GRID": "log:5"}
    refused = study(str(toy_study["root"] / "refused"), env)
    assert refused.returncode == 2
    assert "study-ls-els.sh: PSPC_STUDY_GRID must be edm:N, got log:5" in refused.stderr


def test_the_tables_script_prints_every_table_of_the_run(toy_study):
    tables = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "ls-els-tables.py"), toy_study["out"],
                             "--resamples", "200"], capture_output=True, text=True, timeout=120)
    assert tables.returncode == 0, tables.stderr
    text = tables.stdout
    for heading in ("forward: MSE to the network", "forward: paired ratios", "reverse: MSE to the network",
                    "reverse: paired ratios", "calibrated windows", "samples from shared noise"):
        assert heading in text, text
    # One row per grid t in each t-table, and a row for every machine compared with the network.
    best = text.split("### forward: MSE to the network")[1].split("###")[0]
    assert len([line for line in best.splitlines() if line.startswith("| ") and "---" not in line]) == 1 + 3, best
    similarity = text.split("### samples from shared noise")[1]
    for method in ("empirical", "ls", "els", "pspc-square", "pspc-flex"):
        assert any(line.startswith(f"| {method}") for line in similarity.splitlines()), similarity
    refused = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "ls-els-tables.py"), str(toy_study["root"])],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "holds no forward/ or reverse/ results.csv" in refused.stderr
