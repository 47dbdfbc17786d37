"""The torch worker (`python -m pspc_net.worker --device cpu`) against the Swift worker (`pspc worker`) and against
literal float64 sums (literal.py): the same request sent to both, every operation, at every t of the 18-step EDM
grid, on 1x28x28 Fashion-MNIST and 3x12x20 colour images (H != W), with x-flip; its handshake, health, refusals
and bad input; a drain on SIGTERM. The mixed-cluster tests (a Swift and a torch worker behind one coordinator)
are in test_mixed_cluster.py.

Needs the built `pspc` binary (as test_pspc_serve.py finds it)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pspc_net import wire
from pspc_net.client import NetworkClient
from pspc_net.proto import pspc_pb2 as pb
from pspc_net.shards import read_manifest, read_shard
from pspc_net.wire import WireError

from . import literal
from .test_pspc_serve import pspc_binary, run_pspc

TOKEN = b"torch-worker-test-token-0123456789"
SCRIPTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Errors are relative: max |a - b| / max |b|, within BOUND plus what float64 can say about the logits: a logit l
# is known to ulp(l) ~ 2.2e-16 |l| in any float64 implementation, so a posterior weight exp(l - log Z) is known to
# about that relatively; at t = 0.002 a crop whose best training patch is 0.1 away has |l| ~ 1e4 (see `bound`).
BOUND = 1e-12
EPS = np.finfo(np.float64).eps


# The Swift worker's own rounding, which bounds how closely the two can agree (Tests/PSPCCoreTests/ExactnessTests
# .swift): its vector exp is a polynomial with relative error <= 7e-12; its square crops take box sums from
# summed-area tables whose rounding (~1e-16 of the whole image's distance) reaches ~1e-8 in a crop's logit at
# t = 0.002, which round 2 shows when it is handed a log Z the kernel did not compute itself.
SWIFT_KERNEL_BOUND = {"square composite": 1e-8, "mask composite": 1e-8}
SWIFT_EXP_BOUND = 1e-11


def bound(logits: np.ndarray) -> float:
    """BOUND plus 8 ulps of the largest logit magnitude that decides the answer (the slots' log Z or max)."""
    finite = np.abs(logits[np.isfinite(logits)])
    return BOUND + 8 * EPS * (float(finite.max()) if finite.size else 0.0)


def edm_grid(steps: int = 18, smin: float = 0.002, smax: float = 80.0, rho: float = 7.0) -> list[float]:
    a, b = smax ** (1 / rho), smin ** (1 / rho)
    return [(a + i / (steps - 1) * (b - a)) ** rho for i in range(steps)]


GRID = edm_grid()


class Served:
    """A worker process (either kind) that printed its listening line."""

    def __init__(self, argv: list[str], log_path: str, env=None):
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.process.wait(timeout=30)
            raise RuntimeError(f"{argv[0]} did not start:\n{open(log_path).read()}")
        self.port = int(line.strip().rsplit(":", 1)[1])
        self.address = f"127.0.0.1:{self.port}"

    def client(self, token: bytes = TOKEN) -> NetworkClient:
        return NetworkClient("127.0.0.1", self.port, token)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.log.close()
        return code


def torch_worker_argv(data: str, token_file: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pspc_net.worker", "--listen", "127.0.0.1:0", "--data", data,
        "--token-file", token_file, "--device", "cpu", "--threads", "1", *extra,
    ]  # fmt: skip


def python_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SCRIPTS + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_torch_worker(data: str, token_file: str, log_path: str, *extra: str) -> Served:
    return Served(torch_worker_argv(data, token_file, *extra), log_path, env=python_env())


def start_swift_worker(data: str, token_file: str, log_path: str, *extra: str) -> Served:
    argv = [pspc_binary(), "worker", "--listen", "127.0.0.1:0", "--data", data, "--token-file", token_file]
    return Served([*argv, "--threads", "1", *extra], log_path)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch-worker")
    token = root / "token"
    token.write_bytes(TOKEN + b"\n")
    fm, colour = str(root / "fm"), str(root / "colour")
    run_pspc("ingest", "--source", "fashion-mnist:train", "--limit", "90", "--shards", "3", "--out", fm)
    run_pspc("ingest", "--source", "fashion-mnist:test", "--limit", "8", "--out", str(root / "fm-test"))
    run_pspc("synthesize", "--shape", "3x12x20", "--count", "48", "--format", "npy", "--out", str(root / "c.npy"))
    run_pspc("ingest", "--source", f"npy:{root / 'c.npy'}", "--limit", "40", "--shards", "2", "--out", colour)
    # Queries come from images outside the training set, as the engine's exactness tests take them.
    held_out = {
        "fm": read_shard(str(root / "fm-test"), read_manifest(str(root / "fm-test")), 0),
        "colour": np.load(str(root / "c.npy"))[40:],
    }
    workers = {}
    for name, data in (("fm", fm), ("colour", colour)):
        workers[name] = (
            start_swift_worker(data, str(token), str(root / f"{name}-swift.log")),
            start_torch_worker(data, str(token), str(root / f"{name}-torch.log")),
            data,
        )
    yield {"root": root, "token": str(token), "workers": workers, "held_out": held_out}
    for swift, torch_worker, _ in workers.values():
        assert swift.stop() == 0
        assert torch_worker.stop() == 0, open(root / "fm-torch.log").read()


def array(tensor: pb.Tensor) -> np.ndarray:
    return wire.array_from_tensor(tensor, "answer", allow_negative_infinity=True)


def posterior(answer: pb.PartialResponse):
    """(log Z, means or None) of one softmax answer: the scale-free form of (m, s, v)."""
    m, s, v = array(answer.softmax.m), array(answer.softmax.s), array(answer.softmax.v)
    means = v / s[:, None] if v.size else None
    return m + np.log(s), means


def relative(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def training(data: str, shard: int) -> np.ndarray:
    manifest = read_manifest(data)
    return literal.training_values(read_shard(data, manifest, shard), xflip=True)


def queries(shape, t: float, count: int, seed: int = 0, images: np.ndarray | None = None) -> np.ndarray:
    """Held-out images (or random levels) plus t times seeded noise."""
    rng = np.random.default_rng(seed)
    if images is None:
        base = rng.integers(0, 256, (count, *shape)).astype(np.float64) / 127.5 - 1
    else:
        base = images[:count].astype(np.float64) / 127.5 - 1
    return base + t * rng.standard_normal(base.shape)


def per_shard(client: NetworkClient, shards: list[int], **op) -> list[pb.PartialResponse]:
    answer = client.call(partial_request=pb.PartialRequest(shards=shards, per_shard=True, **op)).partial_response
    return list(answer.per_shard.shards)


def masks_for(height: int, width: int, seed: int = 1):
    """Seven masks of random pixel sets (one holding most pixels), with multiplicities."""
    rng = np.random.default_rng(seed)
    hw = height * width
    masks = [sorted(set(rng.integers(0, hw, rng.integers(1, hw // 3)).tolist())) for _ in range(6)]
    masks.append(sorted(set(range(hw)) - {0, 5}))
    multiplicity = [1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0]
    offsets = np.cumsum([0] + [len(m) for m in masks]).tolist()
    spec = pb.MaskSetSpec(offsets=offsets, pixels=sum(masks, []), multiplicity=multiplicity, pixel_count=hw)
    return masks, multiplicity, spec


@pytest.mark.parametrize("name", ["fm", "colour"])
def test_every_operation_matches_the_swift_worker_and_the_literal_sums(datasets, name):
    swift, torch_worker, data = datasets["workers"][name]
    with swift.client() as a, torch_worker.client() as b:
        assert a.welcome.info == b.welcome.info, "the torch worker must describe the dataset as pspc worker does"
        info = b.welcome.info
        shape = (info.shape.channels, info.shape.height, info.shape.width)
        shards = [s.id for s in info.shards]
        parts = {sid: training(data, sid) for sid in shards}
        c, h, w = shape
        square = 5 if name == "fm" else 3
        crops = literal.square_crops(h, w, square)
        masks, multiplicity, mask_spec = masks_for(h, w)
        # Per operation the worst (torch vs literal, torch vs swift), each as a multiple of its bound.
        worst: dict[str, list[float]] = {}

        def record(key, logits, torch_vs_literal, torch_vs_swift):
            allowed = bound(logits)
            swift_allowed = allowed + SWIFT_KERNEL_BOUND.get(key, SWIFT_EXP_BOUND)
            old = worst.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            old[0], old[1] = max(old[0], torch_vs_literal), max(old[1], torch_vs_swift)
            old[2], old[3] = max(old[2], torch_vs_literal / allowed), max(old[3], torch_vs_swift / swift_allowed)

        for t in GRID:
            z = queries(shape, t, 2, seed=int(t * 1000), images=datasets["held_out"][name])
            zt = wire.tensor_from_array(z, compression="none")
            ops = {
                "empirical": dict(empirical=pb.EmpiricalOp(queries=zt, t=t)),
                "square": dict(crop_normalizers=pb.CropNormalizersOp(queries=zt, t=t, crops=pb.CropSpec(square_patch_size=square))),
                "masks": dict(crop_normalizers=pb.CropNormalizersOp(queries=zt, t=t, crops=pb.CropSpec(masks=mask_spec))),
                "ls": dict(window_posterior=pb.WindowPosteriorOp(queries=zt, t=t, patch_size=3)),
            }  # fmt: skip
            if name == "colour":
                ops["els"] = dict(window_posterior=pb.WindowPosteriorOp(queries=zt, t=t, patch_size=3, equivariant=True))
            for key, op in ops.items():
                for sid, sa, sb in zip(shards, per_shard(a, shards, **op), per_shard(b, shards, **op)):
                    x = parts[sid]
                    if key == "empirical":
                        ref = literal.empirical(z, x, t)
                    elif key == "square":
                        ref = (literal.crop_log_z(z, x, t, crops).reshape(-1), None)
                    elif key == "masks":
                        ref = (literal.crop_log_z(z, x, t, masks).reshape(-1), None)
                    else:
                        lz, means = literal.window_posterior(z, x, t, 3, key == "els")
                        ref = (lz.reshape(-1), means.reshape(-1, c))
                    (la, ma), (lb, mb) = posterior(sa), posterior(sb)
                    errors = [relative(lb, ref[0]), relative(lb, la)]
                    if ref[1] is not None:
                        errors = [max(errors[0], relative(mb, ref[1])), max(errors[1], relative(mb, ma))]
                    record(key, lb, *errors)
            # Round 2 with the literal log Z of each shard (squares and masks).
            for key, spec, crop_list, mult in (
                ("square composite", pb.CropSpec(square_patch_size=square), crops, [1.0] * len(crops)),
                ("mask composite", pb.CropSpec(masks=mask_spec), masks, multiplicity),
            ):
                for sid in shards:
                    x = parts[sid]
                    log_z = literal.crop_log_z(z, x, t, crop_list)
                    op = pb.CropCompositeOp(
                        queries=zt, t=t, crops=spec, log_z=wire.tensor_from_array(log_z, compression="none")
                    )
                    (sa,), (sb,) = per_shard(a, [sid], crop_composite=op), per_shard(b, [sid], crop_composite=op)
                    ref = literal.crop_composite(z, x, t, crop_list, mult, log_z)
                    record(key, log_z, relative(array(sb.sums), ref), relative(array(sb.sums), array(sa.sums)))
        # Moments: exact on both sides, so bit-identical; the literal sums carry their own rounding.
        for rows in ((0, 0), (3, 7)):
            op = pb.MomentsOp(row_start=rows[0], row_count=rows[1])
            for sid, sa, sb in zip(shards, per_shard(a, shards, moments=op), per_shard(b, shards, moments=op)):
                count, total, outer = literal.moments(parts[sid], slice(rows[0], rows[0] + (rows[1] or c * h * w)))
                assert sb.moments.count == sa.moments.count == count
                assert sb.moments.row_start == rows[0]
                np.testing.assert_array_equal(array(sb.moments.sum), array(sa.moments.sum))
                np.testing.assert_array_equal(array(sb.moments.outer), array(sa.moments.outer))
                record("moments", np.zeros(1), relative(array(sb.moments.outer), outer), 0.0)
        print(f"\n{name}: worst relative error over the grid: torch vs literal, torch vs swift (and / bound)")
        for key, (to_literal, to_swift, lit_ratio, swift_ratio) in worst.items():
            print(f"  {key:18s} {to_literal:.1e} {to_swift:.1e}   ({lit_ratio:.2f} {swift_ratio:.2f})")
        for key, (to_literal, to_swift, lit_ratio, swift_ratio) in worst.items():
            assert lit_ratio <= 1, f"{key}: torch worker vs literal sums {to_literal:.1e}, over its bound"
            assert swift_ratio <= 1, f"{key}: torch worker vs swift worker {to_swift:.1e}, over its bound"


def test_merged_answers_follow_shard_order_and_the_frame_limit(datasets):
    swift, torch_worker, _ = datasets["workers"]["fm"]
    z = queries((1, 28, 28), 0.5, 3)
    op = pb.EmpiricalOp(queries=wire.tensor_from_array(z, compression="none"), t=0.5)
    with swift.client() as a, torch_worker.client() as b:
        for shards in ([], [2, 0]):
            sa = a.call(partial_request=pb.PartialRequest(shards=shards, empirical=op)).partial_response
            sb = b.call(partial_request=pb.PartialRequest(shards=shards, empirical=op)).partial_response
            (la, ma), (lb, mb) = posterior(sa), posterior(sb)
            assert relative(lb, la) <= BOUND and relative(mb, ma) <= BOUND
        health = b.call(health_request=pb.HealthRequest()).health_response
        assert health.info == b.welcome.info and health.served >= 2 and health.in_flight == 0


def test_bad_requests_get_the_swift_workers_error_codes(datasets):
    swift, torch_worker, _ = datasets["workers"]["fm"]
    good = wire.tensor_from_array(queries((1, 28, 28), 1.0, 2), compression="none")
    wrong_shape = wire.tensor_from_array(np.zeros((2, 1, 28, 27)), compression="none")
    nan = np.zeros((2, 1, 28, 28))
    nan[1, 0, 3, 4] = np.nan
    cases = [
        (pb.PartialRequest(), pb.ERROR_CODE_UNKNOWN_OPERATION, "names no operation"),
        (pb.PartialRequest(empirical=pb.EmpiricalOp(queries=wrong_shape, t=1.0)), pb.ERROR_CODE_INVALID_ARGUMENT, "1x28x27"),
        (pb.PartialRequest(empirical=pb.EmpiricalOp(queries=wire.tensor_from_array(nan, compression="none"), t=1.0)), pb.ERROR_CODE_INVALID_ARGUMENT, "finite"),
        (pb.PartialRequest(empirical=pb.EmpiricalOp(queries=good, t=0.0)), pb.ERROR_CODE_INVALID_ARGUMENT, "positive"),
        (pb.PartialRequest(shards=[7], empirical=pb.EmpiricalOp(queries=good, t=1.0)), pb.ERROR_CODE_INVALID_ARGUMENT, "shard 7"),
        (pb.PartialRequest(shards=[1, 1], per_shard=True, empirical=pb.EmpiricalOp(queries=good, t=1.0)), pb.ERROR_CODE_INVALID_ARGUMENT, "distinct"),
        (pb.PartialRequest(window_posterior=pb.WindowPosteriorOp(queries=good, t=1.0, patch_size=4)), pb.ERROR_CODE_INVALID_ARGUMENT, "odd"),
        (pb.PartialRequest(crop_normalizers=pb.CropNormalizersOp(queries=good, t=1.0, crops=pb.CropSpec(square_patch_size=29))), pb.ERROR_CODE_INVALID_ARGUMENT, "larger"),
        (pb.PartialRequest(moments=pb.MomentsOp(row_start=780, row_count=10)), pb.ERROR_CODE_INVALID_ARGUMENT, "outside"),
    ]  # fmt: skip
    with swift.client() as a, torch_worker.client() as b:
        for request, code, words in cases:
            for client, kind in ((a, "swift"), (b, "torch")):
                with pytest.raises(WireError) as raised:
                    client.call(partial_request=request)
                assert raised.value.code == code, (kind, raised.value.code, raised.value.message)
                if kind == "torch":
                    assert words in raised.value.message, raised.value.message
        with pytest.raises(WireError) as raised:
            b.call(denoise_request=pb.DenoiseRequest())
        assert raised.value.code == pb.ERROR_CODE_UNKNOWN_OPERATION and "partial sums" in raised.value.message
        # The connection survives bad requests.
        assert b.call(health_request=pb.HealthRequest()).health_response.info.image_count == 180


def test_wrong_token_and_malformed_frames_are_refused(datasets):
    _, torch_worker, _ = datasets["workers"]["fm"]
    with pytest.raises(WireError) as raised:
        torch_worker.client(b"not-the-cluster-token-at-all")
    assert raised.value.code == pb.ERROR_CODE_AUTHENTICATION_FAILED
    with torch_worker.client() as c:
        c.send_bytes(c.encode_payload(b"\x0a\xff\xff garbage"))
        frame = c.receive()
        assert frame.WhichOneof("body") == "error" and frame.error.code == pb.ERROR_CODE_MALFORMED_FRAME
        assert c.receive() is None, "the connection closes after a frame that does not parse"


def test_damaged_shards_and_bad_arguments_stop_it_with_the_file_named(datasets, tmp_path):
    _, _, data = datasets["workers"]["fm"]
    token = datasets["token"]

    def run(directory: str, *extra: str):
        return subprocess.run(
            torch_worker_argv(directory, token, *extra), capture_output=True, text=True, timeout=120, env=python_env()
        )

    for damage, words in (("flip", "SHA-256 does not match"), ("truncate", "truncated"), ("remove", "missing")):
        copy = str(tmp_path / damage)
        shutil.copytree(data, copy)
        path = os.path.join(copy, "shard-00001-of-00003.pspc")
        raw = bytearray(open(path, "rb").read())
        if damage == "flip":
            raw[len(raw) // 2] ^= 0x40
            open(path, "wb").write(raw)
        elif damage == "truncate":
            open(path, "wb").write(raw[: len(raw) - 100])
        else:
            os.remove(path)
        result = run(copy)
        assert result.returncode == 2, result.stderr
        assert "shard-00001-of-00003.pspc" in result.stderr and words in result.stderr, result.stderr
    assert "not a shard id" in run(data, "--shards", "0,9").stderr
    assert "INDEX/COUNT" in run(data, "--placement", "3").stderr
    # A worker serving only its placement reports just those shards.
    placed = start_torch_worker(data, token, str(tmp_path / "placed.log"), "--placement", "1/3/2")
    with placed.client() as c:
        assert [s.id for s in c.welcome.info.shards] == [0, 1]
    assert placed.stop() == 0


def test_sigterm_lets_the_request_in_flight_finish_and_exits_zero(datasets, tmp_path):
    _, _, data = datasets["workers"]["fm"]
    worker = start_torch_worker(data, datasets["token"], str(tmp_path / "drain.log"))
    z = wire.tensor_from_array(queries((1, 28, 28), 0.3, 4), compression="none")
    with worker.client() as c:
        c.send(pb.Frame(request_id=9, partial_request=pb.PartialRequest(
            window_posterior=pb.WindowPosteriorOp(queries=z, t=0.3, patch_size=5, equivariant=True))))  # fmt: skip
        time.sleep(0.5)
        worker.process.send_signal(signal.SIGTERM)
        frame = c.receive()
        assert frame is not None and frame.request_id == 9 and frame.WhichOneof("body") == "partial_response"
    assert worker.stop() == 0
    assert "stopping" in open(tmp_path / "drain.log").read()
