"""End-to-end tests of the network endpoint (pspc_net.serve): a server process on a free port with a tiny
random-weight network (8x8 images, --batch 3 so batches split unevenly), a Python client speaking the
client side of the protocol, one torch thread on both sides."""

from __future__ import annotations

import os
import select
import socket
import threading
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pspc_net import wire
from pspc_net.client import NetworkClient
from pspc_net.heatmap import gradient_heatmaps, locality
from pspc_net.model import EDMPrecond, load_checkpoint, save_checkpoint
from pspc_net.proto import pspc_pb2 as pb
from pspc_net.wire import WireError

SCRIPTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKEN = b"test-cluster-token-0123456789"
RES = 8
BATCH = 3


class ServerProcess:
    """`python -m pspc_net.serve ...` on 127.0.0.1:0; waits for the listening line."""

    def __init__(self, args: list[str], log_path: str):
        env = {**os.environ, "PYTHONPATH": SCRIPTS, "OMP_NUM_THREADS": "1"}
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pspc_net.serve", "--listen", "127.0.0.1:0", "--threads", "1", *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 120)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("pspc network listening on 127.0.0.1:"):
            self.proc.kill()
            raise RuntimeError(f"the server did not start: {line!r}; see {log_path}")
        self.port = int(line.strip().rsplit(":", 1)[1])

    def client(self, token: bytes = TOKEN, **kwargs) -> NetworkClient:
        return NetworkClient("127.0.0.1", self.port, token, timeout=60, **kwargs)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.log.close()


def tiny_net(seed: int = 0) -> EDMPrecond:
    torch.manual_seed(seed)
    net = EDMPrecond.from_preset("tiny", img_resolution=RES)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    checkpoint = str(root / "tiny.pt")
    save_checkpoint(tiny_net(), checkpoint)
    token = root / "token"
    token.write_bytes(TOKEN + b"\n")
    return {"root": root, "checkpoint": checkpoint, "token": str(token)}


@pytest.fixture(scope="module")
def server(files):
    s = ServerProcess(
        [
            "--checkpoint", files["checkpoint"], "--token-file", files["token"], "--device", "cpu",
            "--batch", str(BATCH), "--data-dir", str(files["root"] / "no-such-dir"),
        ],
        str(files["root"] / "server.log"),
    )  # fmt: skip
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def net(files):
    return load_checkpoint(files["checkpoint"])


def raw(server: ServerProcess) -> NetworkClient:
    """A connection with no handshake done."""
    return server.client(handshake=False)


def hello(**changes) -> pb.Frame:
    fields = dict(magic=b"PSPC", protocol_version=2, role=pb.ROLE_COORDINATOR, nonce=os.urandom(32), node_id="t")
    fields.update(changes)
    return pb.Frame(request_id=0, hello=pb.Hello(**fields))


def expect_error_then_close(client: NetworkClient, code: int, request_id: int = 0) -> str:
    frame = client.receive()
    assert frame is not None and frame.WhichOneof("body") == "error", frame
    assert frame.error.code == code, frame.error.message
    assert frame.request_id == request_id
    assert client.receive() is None  # closed
    return frame.error.message


def queries(b: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.exp(rng.uniform(np.log(0.002), np.log(80), b))
    z = rng.uniform(-1, 1, (b, 1, RES, RES)) + t[:, None, None, None] * rng.standard_normal((b, 1, RES, RES))
    return z, t


def assert_serving(server: ServerProcess, net) -> None:
    with server.client() as c:
        z, t = queries(2, seed=99)
        c.denoise(z, t)


# MARK: denoise


@pytest.mark.parametrize("compression", ["auto", "none", "zstd"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_denoise_equals_the_network(server, net, compression, dtype):
    z, t = queries(7)
    z = z.astype(dtype)
    with server.client() as c:
        assert c.welcome.role == pb.ROLE_NETWORK
        assert (c.welcome.info.shape.channels, c.welcome.info.shape.height, c.welcome.info.shape.width) == (1, RES, RES)
        d = c.denoise(z, t, compression=compression)
    assert d.dtype == np.float32 and d.shape == z.shape
    with torch.no_grad():
        direct = net(torch.from_numpy(z).float(), torch.from_numpy(t).float()).numpy()
    np.testing.assert_allclose(d, direct, rtol=1e-6, atol=1e-6)


def test_empty_batch_and_pipelined_requests(server, net):
    with server.client() as c:
        assert c.denoise(np.zeros((0, 1, RES, RES)), np.zeros(0)).shape == (0, 1, RES, RES)
        batches = [queries(b, seed=b) for b in (1, 4, 5)]
        for rid, (z, t) in enumerate(batches, start=100):
            request = pb.DenoiseRequest(z=wire.tensor_from_array(z), t=wire.tensor_from_array(t))
            c.send(pb.Frame(request_id=rid, denoise_request=request))
        answers = {}
        while len(answers) < 3:
            frame = c.receive()
            answers[frame.request_id] = wire.array_from_tensor(frame.denoise_response.denoised, "d")
    for rid, (z, t) in enumerate(batches, start=100):
        with torch.no_grad():
            direct = net(torch.from_numpy(z).float(), torch.from_numpy(t).float()).numpy()
        np.testing.assert_allclose(answers[rid], direct, rtol=1e-6, atol=1e-6)


def test_health(server):
    with server.client() as c:
        before = c.health()
        c.denoise(*queries(2))
        after = c.health()
    assert after.info.shape.height == RES and after.info.threads == 1
    assert after.served == before.served + 1 and after.in_flight == 0


# MARK: handshake


def test_wrong_token_is_refused(server, net):
    with pytest.raises(WireError) as e:
        server.client(token=b"not-the-cluster-token!")  # the client sees the server's proof fail first
    assert e.value.code == pb.ERROR_CODE_AUTHENTICATION_FAILED
    # A client that goes on anyway: its proof fails on the server, which says so and closes.
    with raw(server) as c:
        cn = os.urandom(32)
        c.send(hello(nonce=cn))
        challenge = c.receive().challenge
        assert challenge.proof == wire.server_proof(TOKEN, cn, challenge.nonce)
        c.send(pb.Frame(proof=pb.Proof(proof=wire.client_proof(b"not-the-cluster-token!", cn, challenge.nonce))))
        expect_error_then_close(c, pb.ERROR_CODE_AUTHENTICATION_FAILED)
    assert_serving(server, net)


@pytest.mark.parametrize(
    "changes, code",
    [
        (dict(magic=b"HTTP", protocol_version=7), pb.ERROR_CODE_BAD_MAGIC),
        (dict(protocol_version=1), pb.ERROR_CODE_UNSUPPORTED_VERSION),
        (dict(role=pb.ROLE_WORKER), pb.ERROR_CODE_AUTHENTICATION_FAILED),
        (dict(role=pb.ROLE_UNSPECIFIED), pb.ERROR_CODE_INVALID_ARGUMENT),
        (dict(nonce=b"\x00" * 31), pb.ERROR_CODE_MALFORMED_FRAME),
    ],
)
def test_bad_hello(server, net, changes, code):
    with raw(server) as c:
        c.send(hello(**changes))
        message = expect_error_then_close(c, code)
    if code == pb.ERROR_CODE_BAD_MAGIC:
        assert "bad magic [48 54 54 50]" in message
    assert_serving(server, net)


def test_operation_before_the_handshake(server, net):
    z, t = queries(1)
    with raw(server) as c:
        c.send(pb.Frame(request_id=5, denoise_request=pb.DenoiseRequest(z=wire.tensor_from_array(z))))
        message = expect_error_then_close(c, pb.ERROR_CODE_UNEXPECTED_MESSAGE, request_id=5)
    assert "expected hello, got denoise_request" in message
    with raw(server) as c:
        c.send(hello())
        c.receive()
        c.send(pb.Frame(request_id=6, health_request=pb.HealthRequest()))  # instead of the proof
        expect_error_then_close(c, pb.ERROR_CODE_UNEXPECTED_MESSAGE, request_id=6)
    assert_serving(server, net)


# MARK: bad frames and requests


def test_malformed_frame_closes_only_its_connection(server, net):
    with server.client() as other, server.client() as c:
        c.send_bytes(c.encode_payload(b"\xff" * 6))  # sealed: its MAC holds, the protobuf does not parse
        expect_error_then_close(c, pb.ERROR_CODE_MALFORMED_FRAME)
        assert other.denoise(*queries(2)).shape == (2, 1, RES, RES)


def test_oversized_frame_is_refused_from_its_length(server, net):
    with raw(server) as c:
        c.send_bytes(struct.pack(">I", wire.DEFAULT_MAX_FRAME_SIZE + 1))  # no body follows
        message = expect_error_then_close(c, pb.ERROR_CODE_FRAME_TOO_LARGE)
    assert str(wire.DEFAULT_MAX_FRAME_SIZE + 1) in message
    assert_serving(server, net)


def denoise_frame(rid: int, z=None, t=None, **tensors) -> pb.Frame:
    request = pb.DenoiseRequest()
    if z is not None:
        request.z.CopyFrom(z if isinstance(z, pb.Tensor) else wire.tensor_from_array(z))
    if t is not None:
        request.t.CopyFrom(t if isinstance(t, pb.Tensor) else wire.tensor_from_array(t))
    return pb.Frame(request_id=rid, denoise_request=request)


def _bad_requests():
    z, t = queries(3)
    nan_z = z.copy()
    nan_z[1, 0, 2, 3] = np.nan
    unspecified = wire.tensor_from_array(z)
    unspecified.dtype = pb.DTYPE_UNSPECIFIED
    short = wire.tensor_from_array(z, "none")
    short.data = short.data[:-8]
    corrupt = wire.tensor_from_array(z, "zstd")
    middle = len(corrupt.data) // 2
    corrupt.data = corrupt.data[:middle] + bytes([corrupt.data[middle] ^ 0xFF]) + corrupt.data[middle + 1 :]
    return [
        ("corrupt zstd", denoise_frame(1, corrupt, t), "does not decompress"),
        ("nan in z", denoise_frame(1, nan_z, t), "values must be finite"),
        ("inf in t", denoise_frame(1, z, np.array([1.0, np.inf, 1.0])), "values must be finite"),
        ("t zero", denoise_frame(1, z, np.array([1.0, 0.0, 1.0])), "t[1] must be positive"),
        ("t shape", denoise_frame(1, z, np.ones(2)), "expected [3]"),
        ("image shape", denoise_frame(1, np.zeros((3, 1, RES, RES + 1)), t), "this network takes [B, 1, 8, 8]"),
        ("three axes", denoise_frame(1, np.zeros((3, RES, RES)), t), "this network takes"),
        ("uint8 z", denoise_frame(1, np.zeros((3, 1, RES, RES), np.uint8), t), "expected float64 or float32"),
        ("no t", denoise_frame(1, z), "denoise_request.t is missing"),
        ("unspecified dtype", denoise_frame(1, unspecified, t), "dtype holds the unspecified value 0"),
        ("short payload", denoise_frame(1, short, t), "its shape needs 1536"),
    ]


@pytest.mark.parametrize("name, frame, needle", _bad_requests(), ids=[r[0] for r in _bad_requests()])
def test_bad_request_gets_an_error_and_the_connection_goes_on(server, net, name, frame, needle):
    with server.client() as c:
        frame.request_id = 41
        c.send(frame)
        reply = c.receive()
        assert reply.WhichOneof("body") == "error" and reply.request_id == 41
        assert reply.error.code == pb.ERROR_CODE_INVALID_ARGUMENT
        assert needle in reply.error.message
        assert c.denoise(*queries(2)).shape == (2, 1, RES, RES)


def test_unknown_and_unexpected_operations(server):
    newer = pb.Frame()
    newer.ParseFromString(b"\x08\x07" + b"\xa2\x06\x00")  # request 7, body field 100: a newer peer's op
    cases = [
        (pb.Frame(request_id=7), pb.ERROR_CODE_UNKNOWN_OPERATION, "no body"),
        (newer, pb.ERROR_CODE_UNKNOWN_OPERATION, "does not know"),
        (pb.Frame(request_id=7, partial_request=pb.PartialRequest()), pb.ERROR_CODE_UNKNOWN_OPERATION, "partial"),
        (pb.Frame(request_id=7, shutdown=pb.Shutdown()), pb.ERROR_CODE_UNKNOWN_OPERATION, "--allow-shutdown"),
        (pb.Frame(request_id=7, challenge=pb.Challenge()), pb.ERROR_CODE_UNEXPECTED_MESSAGE, "got challenge"),
    ]
    with server.client() as c:
        for frame, code, needle in cases:
            c.send(frame)
            reply = c.receive()
            assert reply.request_id == 7 and reply.error.code == code and needle in reply.error.message
        assert c.health().info.shape.width == RES


# MARK: heatmaps


def test_heatmap_over_the_protocol(server, net):
    images = np.random.default_rng(3).integers(0, 256, (5, 1, RES, RES), dtype=np.uint8)
    with server.client() as c:
        maps, loc = c.heatmap(t=1.5, samples=2, seed=11, images=images)
    assert maps.shape == (RES, RES, RES, RES) and maps.dtype == np.float64
    assert loc.shape == (3,) and loc.dtype == np.float64
    assert np.isfinite(maps).all() and (maps >= 0).all()
    np.testing.assert_allclose(loc, locality(maps))
    assert 1 <= loc[0] <= loc[1] <= loc[2] <= 2 * RES - 1
    expected = gradient_heatmaps(net.requires_grad_(False), torch.from_numpy(images), 1.5, 2, 11, batch=BATCH)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-7)


def test_ranged_heatmaps_over_the_protocol_assemble_the_full_map(server, net):
    images = np.random.default_rng(4).integers(0, 256, (3, 1, RES, RES), dtype=np.uint8)
    with server.client() as c:
        maps, loc = c.heatmap(t=0.9, samples=3, seed=5, images=images)
        parts, sides = [], []
        for start in range(0, RES * RES, 24):
            count = min(24, RES * RES - start)
            part, part_loc, part_sides = c.heatmap(t=0.9, samples=3, seed=5, images=images, outputs=(start, count))
            assert part.shape == (count, RES, RES) and part_sides.shape == (count, 3)
            np.testing.assert_array_equal(part_loc, part_sides.mean(axis=0))
            parts.append(part)
            sides.append(part_sides)
        # In order: the same images, picked by the client, give the maps of those draws.
        picked = images[[2, 0, 2]]
        ordered, _ = c.heatmap(t=0.9, samples=3, seed=5, images=picked, in_order=True)
    np.testing.assert_array_equal(np.concatenate(parts).reshape(maps.shape), maps)
    np.testing.assert_array_equal(np.concatenate(sides).sum(axis=0) / (RES * RES), loc)
    expected = gradient_heatmaps(net.requires_grad_(False), torch.from_numpy(picked), 0.9, 3, 5, batch=BATCH, in_order=True)
    np.testing.assert_allclose(ordered, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "request_fields, code, needle",
    [
        (dict(t=1.0, samples=1, output_start=3), pb.ERROR_CODE_INVALID_ARGUMENT, "output_start needs"),
        (dict(t=1.0, samples=1, output_start=60, output_count=5), pb.ERROR_CODE_INVALID_ARGUMENT, "the image has 64"),
        (dict(t=1.0, samples=2, images_in_order=True, images=np.zeros((3, 1, RES, RES), np.uint8)),
         pb.ERROR_CODE_INVALID_ARGUMENT, "one image per sample"),
        (dict(t=0.0, samples=1), pb.ERROR_CODE_INVALID_ARGUMENT, "t must be positive"),
        (dict(t=float("nan"), samples=1), pb.ERROR_CODE_INVALID_ARGUMENT, "t must be positive"),
        (dict(t=1.0, samples=0), pb.ERROR_CODE_INVALID_ARGUMENT, "samples must be in"),
        (dict(t=1.0, samples=1, images=np.zeros((2, 1, 4, 4), np.uint8)), pb.ERROR_CODE_INVALID_ARGUMENT, "takes"),
        (dict(t=1.0, samples=1, images=np.zeros((2, 1, RES, RES))), pb.ERROR_CODE_INVALID_ARGUMENT, "expected uint8"),
        (dict(t=1.0, samples=1), pb.ERROR_CODE_UNAVAILABLE, "no images given"),  # the server has no default set
        (dict(t=1.0, samples=1, images=np.zeros((0, 1, RES, RES), np.uint8)), pb.ERROR_CODE_UNAVAILABLE, "no images"),
    ],
)
def test_bad_heatmap_requests(server, request_fields, code, needle):
    fields = dict(request_fields)
    images = fields.pop("images", None)
    request = pb.HeatmapRequest(seed=1, **fields)
    if images is not None:
        request.images.CopyFrom(wire.tensor_from_array(images))
    with server.client() as c:
        c.send(pb.Frame(request_id=9, heatmap_request=request))
        reply = c.receive()
        assert reply.request_id == 9 and reply.error.code == code and needle in reply.error.message
        assert c.health().in_flight == 0


def test_cancel_a_running_heatmap(server, net):
    images = np.zeros((1, 1, RES, RES), np.uint8)
    with server.client() as c:
        request = pb.HeatmapRequest(t=1.0, samples=100000, seed=0, images=wire.tensor_from_array(images))
        c.send(pb.Frame(request_id=21, heatmap_request=request))
        time.sleep(0.5)
        assert c.health().in_flight == 1
        start = time.monotonic()
        c.send(pb.Frame(request_id=22, cancel=pb.Cancel(target_request_id=21)))
        reply = c.receive()
        assert reply.request_id == 21 and reply.error.code == pb.ERROR_CODE_CANCELLED
        assert time.monotonic() - start < 10
        assert c.health().in_flight == 0
        assert c.denoise(*queries(2)).shape == (2, 1, RES, RES)


# MARK: other adapters and options, stopping


class ConvEps(torch.nn.Module):
    """A locally connected eps network: one 3x3 convolution, then tanh."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)) * (1 + n[:, None, None, None] / 1000)


def test_vp_eps_endpoint_float64_responses_and_local_heatmaps(files):
    torch.manual_seed(2)
    module = ConvEps().eval()
    path = str(files["root"] / "eps.pt2")
    b = torch.export.Dim("b")
    example = (torch.randn(2, 1, RES, RES), torch.rand(2))
    torch.export.save(torch.export.export(module, example, dynamic_shapes=({0: b}, {0: b})), path)
    s = ServerProcess(
        [
            "--checkpoint", path, "--adapter", "vp-eps", "--shape", f"1,{RES},{RES}", "--token-file", files["token"],
            "--device", "cpu", "--batch", "16", "--response-dtype", "float64", "--compression", "none",
        ],
        str(files["root"] / "vp.log"),
    )  # fmt: skip
    try:
        with s.client() as c:
            z, t = queries(4)
            d = c.denoise(z, t)
            images = np.random.default_rng(0).integers(0, 256, (3, 1, RES, RES), dtype=np.uint8)
            maps, loc = c.heatmap(t=0.7, samples=2, seed=0, images=images)
    finally:
        assert s.stop() == 0
    assert d.dtype == np.float64
    from pspc_net.adapters import VPEpsAdapter, vp_alphas_cumprod

    adapter = VPEpsAdapter(module, (1, RES, RES), torch.device("cpu"), vp_alphas_cumprod())
    with torch.no_grad():
        direct = adapter(torch.from_numpy(z).float(), torch.from_numpy(t).float()).numpy()
    np.testing.assert_allclose(d, direct, rtol=1e-6, atol=1e-6)
    # D = z - t eps(conv): the map of each output pixel lives in its 3x3 neighbourhood.
    ys, xs = np.meshgrid(np.arange(RES), np.arange(RES), indexing="ij")
    for y in range(RES):
        for x in range(RES):
            assert np.all(maps[y, x][(np.abs(ys - y) > 1) | (np.abs(xs - x) > 1)] == 0)
            assert maps[y, x, y, x] > 0
    assert np.all(loc <= 3)


def test_sigterm_stops_the_server_cleanly(files):
    s = ServerProcess(
        ["--checkpoint", files["checkpoint"], "--token-file", files["token"], "--device", "cpu"],
        str(files["root"] / "term.log"),
    )
    c = s.client()
    assert c.health().served == 0
    # A long heatmap is running when the signal comes: it is cancelled at its next pass.
    images = wire.tensor_from_array(np.zeros((1, 1, RES, RES), np.uint8))
    c.send(pb.Frame(request_id=3, heatmap_request=pb.HeatmapRequest(t=1.0, samples=100000, images=images)))
    time.sleep(0.5)
    start = time.monotonic()
    assert s.stop() == 0
    assert time.monotonic() - start < 15
    while (frame := c.receive()) is not None:  # the open connection was closed, perhaps after a CANCELLED
        assert frame.error.code == pb.ERROR_CODE_CANCELLED
    c.close()
    with open(files["root"] / "term.log") as f:
        assert "stopped" in f.read()


def test_command_line_errors(files):
    short = files["root"] / "short-token"
    short.write_bytes(b"too short\n")
    env = {**os.environ, "PYTHONPATH": SCRIPTS}
    run = subprocess.run(
        [sys.executable, "-m", "pspc_net.serve", "--checkpoint", files["checkpoint"], "--token-file", str(short)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "at least 16 bytes" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "pspc_net.serve", "--checkpoint", files["checkpoint"], "--token-file",
         files["token"], "--listen", "nohost"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "HOST:PORT" in run.stderr


def test_heatmaps_too_large_for_a_frame_are_refused_before_any_work(net):
    from pspc_net.adapters import EDMAdapter
    from pspc_net.serve import NetworkService

    service = NetworkService(EDMAdapter(net, (1, RES, RES), torch.device("cpu"), "tiny"), max_frame_size=20000)
    images = wire.tensor_from_array(np.zeros((1, 1, RES, RES), np.uint8))
    with pytest.raises(WireError, match="maps of 64 output pixels of 8x8 images take 32768 bytes") as e:
        service.heatmap(pb.HeatmapRequest(t=1.0, samples=1, images=images))
    assert e.value.code == pb.ERROR_CODE_INVALID_ARGUMENT
    # A range that fits is answered.
    answer = service.heatmap(pb.HeatmapRequest(t=1.0, samples=1, images=images, output_start=60, output_count=4))
    assert list(answer.maps.shape) == [4, RES, RES] and list(answer.sides.shape) == [4, 3]


# MARK: version 2: sealed frames, limits, timeouts


def test_sealed_frames_refuse_flipped_bits_replays_and_reordering(server, net):
    health = pb.Frame(request_id=3, health_request=pb.HealthRequest())
    for where in (6, -1):  # a bit of the protobuf, a bit of the tag
        with server.client() as c:
            data = bytearray(c.encode(health))
            data[where] ^= 0x01
            c.send_bytes(bytes(data))
            assert expect_error_then_close(c, pb.ERROR_CODE_AUTHENTICATION_FAILED) == (
                "frame 0 failed its integrity check (bad MAC)"
            )
    with server.client() as c:  # a replay
        data = c.encode(health)
        c.send_bytes(data)
        assert c.receive().request_id == 3
        c.send_bytes(data)
        assert "frame 1 failed" in expect_error_then_close(c, pb.ERROR_CODE_AUTHENTICATION_FAILED)
    with server.client() as c:  # two frames swapped
        first, second = c.encode(health), c.encode(health)
        c.send_bytes(second + first)
        assert "frame 0 failed" in expect_error_then_close(c, pb.ERROR_CODE_AUTHENTICATION_FAILED)
    with server.client() as c:  # a plain frame after the handshake
        c.send_bytes(wire.encode_frame(health))
        expect_error_then_close(c, pb.ERROR_CODE_AUTHENTICATION_FAILED)
    assert_serving(server, net)


def test_frame_over_64_kib_before_the_handshake_is_refused_from_its_length(server, net):
    with raw(server) as c:
        c.send_bytes(struct.pack(">I", wire.HANDSHAKE_MAX_FRAME_SIZE + 1))  # no body follows
        message = expect_error_then_close(c, pb.ERROR_CODE_FRAME_TOO_LARGE)
    assert "65537 bytes exceeds the limit of 65536" in message
    with server.client() as c:  # after it, frames of the normal limit
        z, t = queries(200)
        assert len(wire.tensor_from_array(z, "none").data) > wire.HANDSHAKE_MAX_FRAME_SIZE
        assert c.denoise(z, t, compression="none").shape == z.shape
    assert_serving(server, net)


def test_handshake_timeout_connection_cap_and_idle_timeout(files):
    s = ServerProcess(
        [
            "--checkpoint", files["checkpoint"], "--token-file", files["token"], "--device", "cpu",
            "--handshake-timeout", "1", "--idle-timeout", "3", "--max-connections", "2",
        ],
        str(files["root"] / "limits.log"),
    )  # fmt: skip
    try:
        start = time.monotonic()
        with raw(s) as c:  # says nothing
            message = expect_error_then_close(c, pb.ERROR_CODE_UNAVAILABLE)
        assert "within 1 s" in message and time.monotonic() - start < 5
        with raw(s) as c:  # stops after the Hello
            c.send(hello())
            assert c.receive().WhichOneof("body") == "challenge"
            expect_error_then_close(c, pb.ERROR_CODE_UNAVAILABLE)
        with s.client() as a, s.client() as b:
            with raw(s) as c:
                assert expect_error_then_close(c, pb.ERROR_CODE_UNAVAILABLE) == "too many connections (limit 2)"
            assert a.health().info.shape.width == RES and b.health().info.shape.width == RES
        deadline = time.monotonic() + 10
        while True:  # the two closed: room again (once the server has seen them go)
            try:
                c = s.client()
                break
            except WireError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with c:
            assert c.health().served >= 0
            start = time.monotonic()
            assert "idle" in expect_error_then_close(c, pb.ERROR_CODE_UNAVAILABLE)
            assert 1 < time.monotonic() - start < 8
    finally:
        assert s.stop() == 0


def fake_server(behaviour):
    """A one-connection endpoint on a thread: the real handshake up to the Proof, then `behaviour(sock,
    handshake)`; returns the port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run():
        conn, _ = listener.accept()
        listener.close()
        with conn:
            decoder = wire.FrameDecoder(wire.HANDSHAKE_MAX_FRAME_SIZE)
            handshake = wire.HandshakeServer(TOKEN, role=pb.ROLE_NETWORK)
            while True:
                decoder.feed(conn.recv(65536))
                frame = decoder.next_frame()
                if frame is None:
                    continue
                action = handshake.receive(frame)
                if action.kind != "send":
                    behaviour(conn, action)
                    conn.shutdown(socket.SHUT_WR)
                    conn.recv(65536)
                    return
                conn.sendall(wire.encode_frame(action.frame))

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1]


def test_client_surfaces_a_plain_error_in_place_of_the_welcome():
    def refuse(conn, action):
        conn.sendall(wire.encode_frame(WireError.authentication_failed().frame()))

    with pytest.raises(WireError) as e:
        NetworkClient("127.0.0.1", fake_server(refuse), TOKEN, timeout=10)
    assert e.value.code == pb.ERROR_CODE_AUTHENTICATION_FAILED and "cluster token" in e.value.message


@pytest.mark.parametrize("forgery", ["plain welcome", "flipped tag", "wrong key"])
def test_client_refuses_a_welcome_that_fails_its_integrity_check(forgery):
    def forge(conn, action):
        if forgery == "plain welcome":
            data = wire.encode_frame(action.frame)
        else:
            key = action.keys.server_to_client if forgery == "flipped tag" else action.keys.client_to_server
            data = bytearray(wire.encode_frame(action.frame, sealer=wire.FrameSealer(key)))
            if forgery == "flipped tag":
                data[-1] ^= 0x80
            data = bytes(data)
        conn.sendall(data)

    with pytest.raises(WireError) as e:
        NetworkClient("127.0.0.1", fake_server(forge), TOKEN, timeout=10)
    assert e.value.message == "frame 0 failed its integrity check (bad MAC)"
