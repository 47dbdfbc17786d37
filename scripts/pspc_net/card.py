"""The reference network's model card: measurements, checks and the card text (scripts/make_model_card.py).

Everything the card states is measured here or read from files the training and evaluation runs
wrote (loss.csv, train.log, checkpoint.pt, mse.json/mse.csv, the bench output); nothing is typed in.
Figures are drawn by `card_figures`, the text by `card_readme`. Distances are L2 over all pixels in data
units ([-1, 1]).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import time
from typing import Any, Callable

import numpy as np
import torch

from .data import to_unit
from .edm import heun_sample, net_denoiser, time_grid
from .heatmap import LOCALITY_FRACTIONS, gradient_heatmaps, locality_sides
from .model import EDMPrecond, count_parameters, load_checkpoint

# The checks on the generalization table (docs/science.md section 6 grid, 18 steps): below the optimal
# (empirical) denoiser where it would copy, and at most 2 % above the better of the two baselines where they are
# near optimal. Every grid t has one of the two: the grid's neighbours 1.923 and 3.257 (the "1.9" and "3.3" of the
# targets, rounded) are both checked.
BEAT_EMPIRICAL_MAX_T = 1.93
WITHIN_BEST_MIN_T = 3.25
WITHIN_BEST_FACTOR = 1.02
# Grid t values are printed with 6 significant digits in mse.csv; this slack keeps 1.09 or 10 inclusive.
_T_SLACK = 1e-9
REQUIRED_EVAL_COUNT = 1000
# Sample check: median nearest-training distance of the samples within this factor of the test images'.
NN_RATIO_LIMIT = 1.25
# A sample is a copy when it is closer to a training image than COPY_FRACTION x the COPY_QUANTILE of the
# test images' nearest-training distances (held-out images are new by construction; only 1 % of them
# come that close, and a copy must come within half of that).
COPY_QUANTILE = 0.01
COPY_FRACTION = 0.5
HEATMAP_TS = (0.03, 0.3, 3.0, 30.0)
# docs/science.md section 4 (CIFAR-10 32x32, DDPM++): the 50 % square is 3x3 at t = 0.03 and 13x13 at t = 30.
PAPER_LOCALITY_50 = {"image_side": 32, "points": [[0.03, 3], [30.0, 13]]}
CHECKPOINT_FILE = "reference-network.pt"
MAX_CHECKPOINT_BYTES = 20 * 1000 * 1000


# MARK: - Nearest neighbours


def nearest_neighbours(
    queries: torch.Tensor, refs: torch.Tensor, block: int = 4096, exclude: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each query the L2 distance to, and index of, its nearest reference, float64 and int64 `[n]`.

    queries `[n, d]`, refs `[m, d]` (any float dtype, computed in float64), refs taken `block` rows at a
    time. `exclude` `[n]` (or `[n, k]`) names reference rows a query must skip (itself, in a set's own
    nearest-neighbour distances). Ties go to the lowest index. The returned distance is recomputed
    directly as ||q - r|| for the chosen row, so an exact copy gives exactly 0.
    """
    n, m = queries.shape[0], refs.shape[0]
    if queries.ndim != 2 or refs.ndim != 2 or queries.shape[1] != refs.shape[1]:
        raise ValueError(f"queries [n, d] and refs [m, d] must share d, got {list(queries.shape)}, {list(refs.shape)}")
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    if m == 0:
        raise ValueError("no reference rows")
    q = queries.to(torch.float64)
    q2 = (q * q).sum(1)
    best = torch.full((n,), math.inf, dtype=torch.float64)
    index = torch.zeros(n, dtype=torch.int64)
    if exclude is not None:
        exclude = exclude.reshape(n, -1).to(torch.int64)
    for start in range(0, m, block):
        r = refs[start : start + block].to(torch.float64)
        # ||q - r||^2 = ||q||^2 + ||r||^2 - 2 q.r, clamped at zero against rounding.
        d2 = (q2[:, None] + (r * r).sum(1)[None, :] - 2 * q @ r.T).clamp_min_(0)
        if exclude is not None:
            local = exclude - start
            rows, cols = torch.nonzero((local >= 0) & (local < r.shape[0]), as_tuple=True)
            d2[rows, local[rows, cols]] = math.inf
        value, arg = d2.min(dim=1)
        better = value < best
        best = torch.where(better, value, best)
        index = torch.where(better, arg + start, index)
    if not torch.isfinite(best).all():
        raise ValueError("a query has no reference row left after `exclude`")
    dist = (q - refs[index].to(torch.float64)).norm(dim=1)
    return dist.numpy(), index.numpy()


def nearest_with_flips(queries: torch.Tensor, refs: torch.Tensor, width: int, **kwargs: Any) -> dict[str, np.ndarray]:
    """Nearest neighbours among `refs` and among refs plus their horizontal flips.

    refs `[m, H*W]` rows of width `width`. Returns "dist"/"index" (unflipped set) and "dist_flip"/
    "index_flip"/"flipped" (the 2m-image set; index into refs, `flipped` says which copy won).
    `kwargs["exclude"]` applies to both halves (a query's own flip is skipped too).
    """
    flipped_refs = refs.reshape(refs.shape[0], -1, width).flip(-1).reshape(refs.shape)
    d0, i0 = nearest_neighbours(queries, refs, **kwargs)
    d1, i1 = nearest_neighbours(queries, flipped_refs, **kwargs)
    flipped = d1 < d0
    return {
        "dist": d0,
        "index": i0,
        "dist_flip": np.where(flipped, d1, d0),
        "index_flip": np.where(flipped, i1, i0),
        "flipped": flipped,
    }


def copy_threshold(test_nn: np.ndarray) -> float:
    """COPY_FRACTION x the COPY_QUANTILE of the test images' nearest-training distances."""
    return COPY_FRACTION * float(np.quantile(test_nn, COPY_QUANTILE))


def copy_flags(sample_nn: np.ndarray, threshold: float) -> np.ndarray:
    """True where a sample's nearest training image is closer than `threshold` (a copy)."""
    return np.asarray(sample_nn) < threshold


def quantiles(values: np.ndarray, qs: tuple[float, ...] = (0.0, 0.001, 0.01, 0.05, 0.5, 0.95, 1.0)) -> dict[str, float]:
    return {f"q{q:g}": float(np.quantile(values, q)) for q in qs}


# MARK: - Generalization table


def check_row(row: dict[str, float]) -> dict[str, Any]:
    """The requirement for one grid t: what applies, the network's ratio and pass (None: no requirement).
    The pass is on the point estimates; the paired interval (`ratio_to_best_ci`, from the evaluation's
    per-query errors, None without them) says how sure it is."""
    t, net, emp, gauss = row["t"], row["network"], row["empirical"], row["gaussian"]
    best = min(emp, gauss)
    out = {"ratio_to_best_ci": None, "ratio_to_empirical_ci": None, **row, "best_baseline": best,
           "ratio_to_best": net / best if best > 0 else math.inf}
    if t <= BEAT_EMPIRICAL_MAX_T + _T_SLACK:
        out.update(requirement="network < empirical", passed=bool(net < emp))
    elif t >= WITHIN_BEST_MIN_T - _T_SLACK:
        out.update(
            requirement=f"network <= {WITHIN_BEST_FACTOR:.2f} x best baseline",
            passed=bool(net <= WITHIN_BEST_FACTOR * best),
        )
    else:
        out.update(requirement="none", passed=None)
    return out


def generalization_table(rows: list[dict[str, float]]) -> dict[str, Any]:
    """All rows checked, descending t, and whether every row with a requirement passes."""
    checked = [check_row(r) for r in sorted(rows, key=lambda r: -r["t"])]
    required = [r for r in checked if r["passed"] is not None]
    return {"rows": checked, "passed": bool(required) and all(r["passed"] for r in required)}


_INTERVALS = ("network_ci", "empirical_ci", "gaussian_ci", "ratio_to_best_ci", "ratio_to_empirical_ci")


def read_evaluation(eval_dir: str) -> dict[str, Any]:
    """mse.json from scripts/evaluate_reference_network.py (or, lacking it, mse.csv: no count or checkpoint)."""
    json_path, csv_path = os.path.join(eval_dir, "mse.json"), os.path.join(eval_dir, "mse.csv")
    if os.path.exists(json_path):
        with open(json_path) as f:
            doc = json.load(f)
        rows = [{**{k: float(r[k]) for k in ("t", "network", "empirical", "gaussian")},
                 **{k: [float(v) for v in r[k]] for k in _INTERVALS if k in r}} for r in doc["rows"]]
        return {"source": json_path, "count": doc.get("count"), "seed": doc.get("seed"),
                "checkpoint": doc.get("checkpoint"), "checkpoint_sha256": doc.get("checkpoint_sha256"), "rows": rows}
    if os.path.exists(csv_path):
        with open(csv_path, newline="") as f:
            rows = [{k: float(r[k]) for k in ("t", "network", "empirical", "gaussian")} for r in csv.DictReader(f)]
        return {"source": csv_path, "count": None, "seed": None, "checkpoint": None, "rows": rows}
    raise FileNotFoundError(f"{eval_dir}: neither mse.json nor mse.csv")


def evaluated_weights(evaluation: dict[str, Any], sha: str, net: EDMPrecond, train_dir: str) -> dict[str, Any]:
    """Were the table's numbers measured on the card's weights? {"same_as_card": bool or None, "step", "how"}.

    mse.json names the checkpoint by path (and by sha256 when it records "checkpoint_sha256"). A path only
    identifies the weights while the file is older than mse.json: an export rewritten in place since the
    evaluation is a different network, so then the answer is None (unknown).
    """
    if evaluation.get("checkpoint_sha256"):
        same = evaluation["checkpoint_sha256"] == sha
        return {"same_as_card": same, "step": None, "how": "sha256 recorded in mse.json"}
    path, source = evaluation.get("checkpoint"), evaluation["source"]
    if not path:
        return {"same_as_card": None, "step": None, "how": f"{os.path.basename(source)} names no checkpoint"}
    if not os.path.exists(path):
        return {"same_as_card": None, "step": None, "how": f"{path} no longer exists"}
    if os.path.getmtime(path) > os.path.getmtime(source):
        return {"same_as_card": None, "step": None, "how": f"{path} was rewritten after the evaluation"}
    other = load_checkpoint(path).state_dict()
    if file_sha256(path) == sha or _same_weights(net.state_dict(), other):
        return {"same_as_card": True, "step": None, "how": f"{path} holds the card's weights"}
    found = identify_step(other, train_dir)
    return {"same_as_card": False, "step": found["step"] if found else None,
            "how": f"{path} holds other weights" + (f" (step {found['step']})" if found else "")}


# MARK: - Training records


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].float(), b[k].float()) for k in a)


def identify_step(state_dict: dict[str, torch.Tensor], train_dir: str) -> dict[str, Any] | None:
    """The training step whose EMA weights equal `state_dict`: checkpoint.pt's EMA or an ema-STEP.pt snapshot."""
    ckpt = os.path.join(train_dir, "checkpoint.pt")
    if os.path.exists(ckpt):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if _same_weights(state_dict, state["ema"]):
            return {"step": int(state["step"]), "source": ckpt, "step_seconds": float(state["wall_seconds"])}
    for path in sorted(glob.glob(os.path.join(train_dir, "ema-*.pt"))):
        match = re.fullmatch(r"ema-(\d+)\.pt", os.path.basename(path))
        if match and _same_weights(state_dict, torch.load(path, map_location="cpu", weights_only=True)["state_dict"]):
            return {"step": int(match.group(1)), "source": path, "step_seconds": None}
    return None


def read_loss_csv(path: str, max_step: int | None = None) -> dict[str, np.ndarray]:
    """loss.csv (step, loss, wall_seconds: each row the mean loss of the steps since the previous row)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if max_step is None or int(r["step"]) <= max_step]
    return {
        "step": np.array([int(r["step"]) for r in rows], dtype=np.int64),
        "loss": np.array([float(r["loss"]) for r in rows]),
        "wall_seconds": np.array([float(r["wall_seconds"]) for r in rows]),
    }


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over `window` values (odd; fewer at both ends, where the window is cut by the data)."""
    half = window // 2
    c = np.concatenate([[0.0], np.cumsum(values)])
    i = np.arange(len(values))
    lo, hi = np.maximum(0, i - half), np.minimum(len(values), i + half + 1)
    return (c[hi] - c[lo]) / (hi - lo)


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")


def read_train_log(path: str, max_step: int | None = None) -> dict[str, Any]:
    """Run segments (a new run or a resume each, with its device and threads) from the training script's log.

    A segment's wall clock runs from its start line to its last "step N/" line at or below `max_step`;
    the sum over segments includes work that a later resume discarded.
    """
    segments: list[dict[str, Any]] = []
    device = threads = None
    with open(path) as f:
        for line in f:
            m = _LOG_LINE.match(line.rstrip("\n"))
            if not m:
                continue
            stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            msg = m.group(2)
            if msg.startswith("new run") or msg.startswith("resumed"):
                resumed = re.search(r"at step (\d+)", msg)
                segments.append({"start": m.group(1), "start_step": int(resumed.group(1)) if resumed else 0,
                                 "_t0": stamp, "seconds": 0.0, "end_step": None})
            elif msg.startswith("network ") and segments:
                dm = re.search(r"device (\S+), threads (\d+)", msg)
                if dm:
                    device, threads = dm.group(1), int(dm.group(2))
                    segments[-1].update(device=device, threads=threads)
                    if gm := re.search(r", gpu (.+)$", msg):
                        segments[-1]["gpu"] = gm.group(1)
            elif segments and (sm := re.match(r"step (\d+)/", msg)
                               or re.search(r"(?:saved checkpoint at step|finished at step) (\d+)", msg)):
                step = int(sm.group(1))
                if max_step is None or step <= max_step:
                    segments[-1].update(seconds=stamp - segments[-1]["_t0"], end_step=step)
    # The steps each segment contributed to the final weights: up to where the next segment resumed.
    kept: dict[str, int] = {}
    for i, s in enumerate(segments):
        del s["_t0"]
        end = s["end_step"] if s["end_step"] is not None else s["start_step"]
        if i + 1 < len(segments):
            end = min(end, segments[i + 1]["start_step"])
        where = s.get("device", "unknown") + (f" ({s['gpu']})" if "gpu" in s else "")
        key = f"{where}, {s.get('threads', '?')} torch threads"
        kept[key] = kept.get(key, 0) + max(0, end - s["start_step"])
    return {"segments": segments, "wall_clock_seconds": sum(s["seconds"] for s in segments),
            "device": device, "threads": threads, "steps_by_device": kept}


def machine_description() -> str:
    """CPU model and core count of the machine running this (where the card is generated)."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return f"{model or 'unknown CPU'}, {os.cpu_count()} cores"


# MARK: - Bench figures


_BENCH_HEADER = re.compile(r"batches of (\d+) (\S+) images, (\w+)(?:, (\d+) torch thread)?")
_BENCH_LINE = re.compile(r"^\s*(direct|protocol)\s.*?([\d.]+) images/s")


def parse_bench(text: str) -> dict[str, Any]:
    """The figures printed by pspc_net.bench (scripts/bench-network.sh); lines starting with # are notes."""
    out: dict[str, Any] = {"text": text.strip("\n")}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if h := _BENCH_HEADER.search(line):
            out.update(batch=int(h.group(1)), shape=h.group(2), device=h.group(3),
                       threads=int(h.group(4)) if h.group(4) else None)
        elif b := _BENCH_LINE.match(line):
            out[f"{b.group(1)}_images_per_s"] = float(b.group(2))
    missing = [k for k in ("batch", "direct_images_per_s", "protocol_images_per_s") if k not in out]
    if missing:
        raise ValueError(f"bench output lacks {missing}: expected pspc_net.bench's lines")
    return out


# MARK: - Network


def architecture(net: EDMPrecond) -> dict[str, Any]:
    """The U-Net's shape from its config, and parameters per part."""
    c = net.config
    res, resolutions = c["img_resolution"], []
    for level in range(len(c["channel_mult"])):
        if level > 0:
            res = (res + 1) // 2
        resolutions.append(res)
    parts = {name: count_parameters(m) for name, m in net.model.named_children()}
    return {
        "resolutions": resolutions,
        "channels": [c["model_channels"] * m for m in c["channel_mult"]],
        "blocks_per_level": {"encoder": c["num_blocks"], "decoder": c["num_blocks"] + 1},
        "attention_resolutions": list(c["attn_resolutions"]),
        "emb_channels": c["emb_channels"] or 4 * c["model_channels"],
        "parameters_by_part": parts,
    }


# MARK: - Measurements (cached)


class Cache:
    """npz files keyed by what produced them, so a re-run of the card only redraws; `root=None` disables."""

    def __init__(self, root: str | None):
        self.root = root

    def get(self, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if self.root is None:
            return compute()
        path = os.path.join(self.root, hashlib.sha256(key.encode()).hexdigest()[:24] + ".npz")
        if os.path.exists(path):
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        value = compute()
        os.makedirs(self.root, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, **value)
        os.replace(tmp, path)
        return value


def tensor_digest(x: torch.Tensor) -> str:
    return hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest()[:16] + str(list(x.shape))


def draw_samples(net: EDMPrecond, count: int, seed: int, steps: int) -> np.ndarray:
    """`count` EDM Heun samples (`steps` grid points, 2 steps - 1 evaluations) from z = t_max eps, eps seeded.

    Returns float64 `[count, C, H, W]` clipped to [-1, 1] (the range of data images).
    """
    c = net.config
    g = torch.Generator().manual_seed(seed)
    ts = time_grid(steps)
    z = float(ts[0]) * torch.randn(count, c["img_channels"], c["img_resolution"], c["img_resolution"], generator=g,
                                   dtype=torch.float64)
    return heun_sample(net_denoiser(net), z, ts).clamp(-1, 1).numpy()


def heatmap_pixels(side: int) -> list[tuple[int, int]]:
    """Output pixels shown in the heatmap figure: centre, upper middle, left edge, lower-right corner region."""
    return [(side // 2, side // 2), (side // 5, side // 2), (side // 2, side // 9), (side - 3, side - 3)]


# MARK: - The card


@dataclasses.dataclass
class CardInputs:
    checkpoint: str
    train_dir: str
    eval_dir: str
    bench_file: str
    out: str
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    test_images: torch.Tensor  # uint8 [M, C, H, W]
    data_description: str
    step: int | None = None
    samples: int = 64
    sample_seed: int = 0
    sampler_steps: int = 18
    test_count: int = 1000
    train_self_count: int = 1000
    heatmap_ts: tuple[float, ...] = HEATMAP_TS
    heatmap_samples: int = 16
    heatmap_seed: int = 0
    cache_dir: str | None = None
    command: str = ""
    copy_checkpoint: bool = True
    log: Callable[[str], None] = print


def measure(inp: CardInputs) -> tuple[dict[str, Any], dict[str, Any]]:
    """All numbers of the card (the metrics) and the arrays the figures need."""
    log, cache = inp.log, Cache(inp.cache_dir)
    net = load_checkpoint(inp.checkpoint).requires_grad_(False)
    sha = file_sha256(inp.checkpoint)
    side = int(net.config["img_resolution"])

    found = identify_step(net.state_dict(), inp.train_dir)
    if found is None and inp.step is None:
        raise ValueError(f"{inp.checkpoint}: weights match no EMA in {inp.train_dir}; pass --step")
    if found is not None and inp.step is not None and found["step"] != inp.step:
        raise ValueError(f"--step {inp.step} but the weights are step {found['step']} ({found['source']})")
    step = found["step"] if found else inp.step
    step_source = (f"its weights equal the EMA in {found['source']}" if found else
                   "given by --step; the weights are no longer in the training folder")

    loss = read_loss_csv(os.path.join(inp.train_dir, "loss.csv"), max_step=step)
    if len(loss["step"]) == 0:
        raise ValueError("loss.csv has no rows up to the checkpoint's step")
    train_state = torch.load(os.path.join(inp.train_dir, "checkpoint.pt"), map_location="cpu", weights_only=True)
    log_path = os.path.join(inp.train_dir, "train.log")
    train_log = read_train_log(log_path, max_step=step) if os.path.exists(log_path) else None
    row_at_step = np.nonzero(loss["step"] == step)[0]
    step_seconds = (found or {}).get("step_seconds") or (
        float(loss["wall_seconds"][row_at_step[0]]) if len(row_at_step) else None)
    window = 2 * int(np.clip(len(loss["loss"]) // 40, 0, 100)) + 1
    smoothed = moving_average(loss["loss"], window)
    log_every = int(loss["step"][1] - loss["step"][0]) if len(loss["step"]) > 1 else int(loss["step"][0])

    evaluation = read_evaluation(inp.eval_dir)
    table = generalization_table(evaluation["rows"])
    eval_weights = evaluated_weights(evaluation, sha, net, inp.train_dir)

    with open(inp.bench_file) as f:
        bench = parse_bench(f.read())

    log(f"card: {inp.samples} Heun-{inp.sampler_steps} samples (seed {inp.sample_seed})")
    t0 = time.perf_counter()
    samples = cache.get(f"samples {sha} {inp.samples} {inp.sample_seed} {inp.sampler_steps}",
                        lambda: {"x": draw_samples(net, inp.samples, inp.sample_seed, inp.sampler_steps)})["x"]
    sample_seconds = time.perf_counter() - t0

    train = to_unit(inp.train_images).reshape(inp.train_images.shape[0], -1)
    test = to_unit(inp.test_images[: inp.test_count]).reshape(min(inp.test_count, len(inp.test_images)), -1)
    data_key = tensor_digest(inp.train_images)
    log(f"card: nearest training images of {len(test)} test images and the samples ({len(train)} training images)")
    nn_test = cache.get(f"nn test {data_key} {tensor_digest(inp.test_images[: inp.test_count])}",
                        lambda: nearest_with_flips(test, train, side))
    nn_samples = nearest_with_flips(torch.from_numpy(samples).reshape(len(samples), -1), train, side)
    g = torch.Generator().manual_seed(0)
    self_idx = torch.randperm(len(train), generator=g)[: inp.train_self_count]
    nn_self = cache.get(f"nn self {data_key} {inp.train_self_count}",
                        lambda: {**nearest_with_flips(train[self_idx], train, side, exclude=self_idx),
                                 "query": self_idx.numpy()})

    ratios = {}
    for key, ref in (("dist", "training set"), ("dist_flip", "training set with x-flips")):
        sm, tm = float(np.median(nn_samples[key])), float(np.median(nn_test[key]))
        ratios[key] = {"reference": ref, "samples_median": sm, "test_median": tm, "ratio": sm / tm,
                       "within_limit": bool(1 / NN_RATIO_LIMIT <= sm / tm <= NN_RATIO_LIMIT)}
    threshold = copy_threshold(nn_test["dist_flip"])
    copies = copy_flags(nn_samples["dist_flip"], threshold)

    maps, sides = [], []
    for t in inp.heatmap_ts:
        log(f"card: heatmaps at t = {t:g} ({inp.heatmap_samples} samples, {side * side} Jacobian rows each)")
        m = cache.get(f"heatmap {sha} {t!r} {inp.heatmap_samples} {inp.heatmap_seed} {data_key}",
                      lambda t=t: {"maps": gradient_heatmaps(net, inp.train_images, t, inp.heatmap_samples,
                                                             inp.heatmap_seed, xflip=True, batch=256)})["maps"]
        maps.append(m)
        sides.append(locality_sides(m))
    mean_sides = [s.mean(axis=(0, 1)).tolist() for s in sides]
    median_sides = [np.median(s.reshape(-1, s.shape[-1]), axis=0).tolist() for s in sides]
    side50 = [s[0] for s in mean_sides]

    cfg = dict(train_state["train_config"])
    metrics: dict[str, Any] = {
        "generated_by": "scripts/make_model_card.py",
        "command": inp.command,
        "checkpoint": {"file": CHECKPOINT_FILE if inp.copy_checkpoint else inp.checkpoint, "source": inp.checkpoint,
                       "sha256": sha, "bytes": os.path.getsize(inp.checkpoint), "step": step,
                       "step_source": step_source},
        "network": {"config": dict(net.config), "parameters": count_parameters(net), "architecture": architecture(net),
                    "preconditioning": "EDM, sigma_data = %g" % net.sigma_data},
        "training": {
            "train_config": cfg,
            "steps": step,
            "images_seen": step * int(cfg["batch_size"]),
            "step_seconds": step_seconds,
            "train_log": train_log,
            "machine": machine_description(),
            "loss_rows": int(len(loss["step"])),
            "log_every_steps": log_every,
            "smoothing_rows": window,
            "last_smoothed_loss": float(smoothed[-1]),
            "min_smoothed_loss": float(smoothed.min()),
        },
        "generalization": {**{k: evaluation[k] for k in ("source", "count", "seed", "checkpoint")},
                           "weights": eval_weights, "required_count": REQUIRED_EVAL_COUNT, **table},
        "samples": {
            "count": int(len(samples)), "seed": inp.sample_seed, "sampler": "EDM Heun (deterministic)",
            "grid_steps": inp.sampler_steps, "evaluations": 2 * inp.sampler_steps - 1,
            "seconds": sample_seconds,
            "nn_distance": nn_samples["dist"].tolist(), "nn_index": nn_samples["index"].tolist(),
            "nn_distance_flip": nn_samples["dist_flip"].tolist(), "nn_index_flip": nn_samples["index_flip"].tolist(),
            "nn_is_flipped": nn_samples["flipped"].tolist(),
            "nn_quantiles_flip": quantiles(nn_samples["dist_flip"]),
        },
        "reference_distances": {
            "data": inp.data_description, "train_count": int(len(train)), "test_count": int(len(test)),
            "test_nn": quantiles(nn_test["dist"]), "test_nn_flip": quantiles(nn_test["dist_flip"]),
            "train_self_count": int(len(self_idx)), "train_self_nn": quantiles(nn_self["dist"]),
            "train_self_nn_flip": quantiles(nn_self["dist_flip"]),
            "train_self_below_copy_threshold": int((nn_self["dist_flip"] < threshold).sum()),
        },
        "nn_ratio": {"limit": NN_RATIO_LIMIT, **ratios},
        "copies": {
            "definition": f"nearest training image (x-flips included) is closer than {COPY_FRACTION:g} x the "
                          f"{COPY_QUANTILE:g} quantile of the test images' nearest-training distances",
            "threshold": threshold, "count": int(copies.sum()), "indices": np.nonzero(copies)[0].tolist(),
            "closest_sample": float(nn_samples["dist_flip"].min()),
        },
        "locality": {
            "t": list(inp.heatmap_ts), "fractions": list(LOCALITY_FRACTIONS), "mean_side": mean_sides,
            "samples": inp.heatmap_samples, "seed": inp.heatmap_seed, "x0": "training images with x-flips",
            "pixels": [list(p) for p in heatmap_pixels(side)],
            "median_side": median_sides,
            # The paper compares its smallest and largest t; consecutive steps are reported as well.
            "side_50_larger_at_largest_t": bool(side50[-1] > side50[0]),
            "side_50_monotone": bool(all(b >= a for a, b in zip(side50, side50[1:]))),
            "paper_50": PAPER_LOCALITY_50,
        },
        "throughput": bench,
    }
    arrays = {"loss": loss, "smoothed": smoothed, "samples": samples, "train": inp.train_images,
              "nn_samples": nn_samples, "copies": copies, "maps": maps, "sides": sides}
    return metrics, arrays


def make_card(inp: CardInputs) -> dict[str, Any]:
    """Measure, draw the figures, write metrics.json, loss.csv, the checkpoint copy and README.md into `inp.out`."""
    from . import card_figures
    from .card_readme import render_readme

    metrics, arrays = measure(inp)
    fig_dir = os.path.join(inp.out, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    card_figures.loss_figure(arrays["loss"], arrays["smoothed"], metrics, os.path.join(fig_dir, "loss.png"))
    card_figures.samples_figure(arrays["samples"], os.path.join(fig_dir, "samples.png"))
    card_figures.nearest_figure(arrays["samples"], arrays["train"], arrays["nn_samples"], arrays["copies"],
                                os.path.join(fig_dir, "samples-nearest.png"))
    card_figures.heatmaps_figure(arrays["maps"], arrays["sides"], metrics["locality"],
                                 os.path.join(fig_dir, "heatmaps.png"))
    card_figures.locality_figure(metrics["locality"], int(metrics["network"]["config"]["img_resolution"]),
                                 os.path.join(fig_dir, "locality.png"))

    step = metrics["checkpoint"]["step"]
    with open(os.path.join(inp.train_dir, "loss.csv"), newline="") as src, \
            open(os.path.join(inp.out, "loss.csv"), "w", newline="") as dst:
        for i, row in enumerate(csv.reader(src)):
            if i == 0 or (row and int(row[0]) <= step):
                csv.writer(dst).writerow(row)
    if inp.copy_checkpoint:
        if metrics["checkpoint"]["bytes"] > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"{inp.checkpoint} is {metrics['checkpoint']['bytes']} bytes, over the 20 MB limit")
        target = os.path.join(inp.out, CHECKPOINT_FILE)
        if not (os.path.exists(target) and os.path.samefile(target, inp.checkpoint)):
            shutil.copyfile(inp.checkpoint, target)
    with open(os.path.join(inp.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, allow_nan=False)
        f.write("\n")
    with open(os.path.join(inp.out, "README.md"), "w") as f:
        f.write(render_readme(metrics))
    return metrics


def command_line(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
