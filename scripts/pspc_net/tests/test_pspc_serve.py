"""End to end: `pspc serve --local-workers 2` on a small Fashion-MNIST set, through `pspc_net.Client`,
against `pspc denoise` on the same queries for every method; errors, two clients at once, SIGTERM. And the
same `Client` against the network endpoint (pspc_net.serve), which refuses the exact methods.

Needs the built `pspc` binary: $PSPC_BINARY, else the newest of .build/release/pspc and .build/debug/pspc
(scripts/test.sh builds it before the Python tests)."""

from __future__ import annotations

import os
import subprocess
import threading

import numpy as np
import pytest
import torch

from pspc_net import Client, WireError
from pspc_net.client import NetworkClient
from pspc_net.launch import PSPCServe
from pspc_net.proto import pspc_pb2 as pb

from .test_serve import BATCH, RES, ServerProcess, save_checkpoint, tiny_net

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TOKEN = b"serve-test-token-0123456789"
T = 0.7
METHODS = [
    ("empirical", {}, []),
    ("pspc-square", {"patch_size": 5}, ["--patch-size", "5"]),
    ("pspc-flex", {"lambda_": 0.4}, ["--lambda", "0.4"]),
    ("gaussian", {}, []),
    ("cfdm", {"smoothing": 0.1, "copies": 2, "seed": 3}, ["--smoothing", "0.1", "--copies", "2", "--cfdm-seed", "3"]),
    ("ls", {"patch_size": 5}, ["--patch-size", "5"]),
    ("els", {"patch_size": 3}, ["--patch-size", "3"]),
]


def pspc_binary() -> str:
    if os.environ.get("PSPC_BINARY"):
        return os.environ["PSPC_BINARY"]
    built = [os.path.join(REPO, ".build", kind, "pspc") for kind in ("release", "debug")]
    built = [path for path in built if os.access(path, os.X_OK)]
    if not built:
        raise RuntimeError("no pspc binary: build it (swift build) or set PSPC_BINARY")
    return max(built, key=os.path.getmtime)


def run_pspc(*args: str) -> None:
    result = subprocess.run([pspc_binary(), *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"pspc {' '.join(args)} failed:\n{result.stderr}"


def serve(args: list[str], log_path: str) -> PSPCServe:
    return PSPCServe(pspc_binary(), args, log_path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pspc-serve")
    data = str(root / "data")
    run_pspc("ingest", "--source", "fashion-mnist:train", "--limit", "203", "--shards", "3", "--out", data)
    # Gaussian bumps as heatmaps, as Tests/ClusterProcessTests does.
    y, x = np.divmod(np.arange(784), 28)
    maps = np.exp(-((y[None, :] - y[:, None]) ** 2 + (x[None, :] - x[:, None]) ** 2) / 4.0).astype(np.float32)
    heatmaps = str(root / "heatmaps.npy")
    np.save(heatmaps, maps.reshape(28, 28, 28, 28))
    token = root / "token"
    token.write_bytes(TOKEN + b"\n")
    rng = np.random.default_rng(5)
    z = rng.uniform(-1, 1, (5, 1, 28, 28)) + T * rng.standard_normal((5, 1, 28, 28))
    np.save(str(root / "z.npy"), z)
    common = ["--data", data, "--local-workers", "2", "--threads", "1"]
    server = serve(["--token-file", str(token), *common, "--heatmaps", heatmaps], str(root / "serve.log"))
    yield {"root": root, "data": data, "heatmaps": heatmaps, "token": str(token), "z": z, "server": server,
           "common": common}  # fmt: skip
    assert server.stop() == 0, open(root / "serve.log").read()


def expected(setup, method: str, flags: list[str]) -> np.ndarray:
    """`pspc denoise` on the same queries (float32 output file)."""
    root = setup["root"]
    out = str(root / f"{method}.npy")
    extra = ["--heatmaps", setup["heatmaps"]] if method == "pspc-flex" else []
    run_pspc(
        "denoise", *setup["common"], "--method", method, *flags, *extra, "--t", str(T),
        "--input", str(root / "z.npy"), "--output", out,
    )  # fmt: skip
    return np.load(out)


@pytest.mark.parametrize("method,options,flags", METHODS, ids=[m[0] for m in METHODS])
def test_every_method_equals_pspc_denoise(setup, method, options, flags):
    want = expected(setup, method, flags)
    with Client(setup["server"].address, setup["token"]) as client:
        assert client.shape == (1, 28, 28) and client.kind == "pspc"
        got = client.denoise(setup["z"], T, method=method, **options)
    assert got.dtype == np.float64 and got.shape == setup["z"].shape
    # The engine's float64 values, rounded as pspc denoise rounds them to its float32 file: the same bits.
    np.testing.assert_array_equal(got.astype(np.float32), want)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_per_query_t_torch_in_and_out_and_the_sampler_wrapper(setup):
    z = setup["z"]
    with Client(setup["server"].address, setup["token"]) as client:
        # Mixed t: each query gets what a request at its own t gives.
        t = np.array([T, T, 2.0, T, 2.0])
        mixed = client.denoise(z, t, method="empirical")
        at_t = client.denoise(z, T, method="empirical")
        at_2 = client.denoise(z, 2.0, method="empirical")
        np.testing.assert_array_equal(mixed[[0, 1, 3]], at_t[[0, 1, 3]])
        np.testing.assert_array_equal(mixed[[2, 4]], at_2[[2, 4]])
        # cfdm numbers queries by their row, whatever the t of their neighbours (other noise would differ by
        # far more than the rounding of batches of other sizes).
        cfdm = dict(method="cfdm", smoothing=0.1, copies=2, seed=3)
        np.testing.assert_allclose(
            client.denoise(z, t, **cfdm)[[0, 1, 3]], client.denoise(z, T, **cfdm)[[0, 1, 3]], rtol=0, atol=1e-12
        )
        # torch in, torch out: same dtype; a float32 numpy array comes back float32.
        zt = torch.from_numpy(z).to(torch.float32)
        out = client.denoise(zt, torch.tensor(T, dtype=torch.float64), method="empirical")
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device == zt.device
        np.testing.assert_array_equal(out.numpy(), client.denoise(z.astype(np.float32), T, method="empirical"))
        assert client.denoise(z.astype(np.float32), T, method="empirical").dtype == np.float32
        # D(x, sigma) as a sampler calls it: sigma a float, [B] or [B, 1, 1, 1].
        D = client.denoiser(method="pspc-square", patch_size=5)
        want = client.denoise(zt, T, method="pspc-square", patch_size=5)
        # (sigma as given: a float32 tensor would hold 0.699999988, not 0.7.)
        for sigma in (T, torch.full((5,), T, dtype=torch.float64), np.full((5, 1, 1, 1), T)):
            assert torch.equal(D(zt, sigma), want)
        # A few Euler steps of the probability-flow ODE run through it.
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 1, 28, 28))).to(torch.float32) * 2.0
        sigmas = [2.0, 1.0, 0.5]
        for s, s_next in zip(sigmas, sigmas[1:]):
            x = x + (s_next - s) * (x - D(x, s)) / s
        assert torch.isfinite(x).all() and x.shape == (2, 1, 28, 28)
        with pytest.raises(TypeError, match="patch_sise"):
            client.denoiser(method="pspc-square", patch_sise=5)


@pytest.mark.parametrize(
    "z_change,t,method,options,needle",
    [
        ("nan", T, "empirical", {}, "must be finite"),
        (None, 0.0, "empirical", {}, "t[0] must be positive"),
        (None, -1.0, "gaussian", {}, "must be positive"),
        (None, T, "no-such-method", {}, "unknown method 'no-such-method'"),
        (None, T, "network", {}, "method 'network' is the trained network"),
        (None, T, None, {}, "method '' is the trained network"),
        ("shape", T, "empirical", {}, "this server's training set is 1x28x28"),
        (None, T, "pspc-square", {}, "exactly one of patch_size and patch_schedule"),
        (None, T, "pspc-square", {"patch_size": 40}, "40"),
        (None, T, "pspc-square", {"patch_schedule": {"t": [1.0], "values": [2.5]}}, "whole numbers"),
        (None, T, "pspc-flex", {"lambda_": 1.5}, "lambda must be in (0, 1]"),
        (None, T, "cfdm", {}, "cfdm needs smoothing"),
        (None, T, "empirical", {"patch_size": 3}, "patch_size is for pspc-square, ls, els, not empirical"),
    ],
)
def test_bad_requests_raise_and_the_connection_goes_on(setup, z_change, t, method, options, needle):
    z = setup["z"].copy()
    if z_change == "nan":
        z[1, 0, 3, 4] = np.nan
    elif z_change == "shape":
        z = z[:, :, :8, :8]
    with Client(setup["server"].address, setup["token"]) as client:
        with pytest.raises(WireError) as error:
            client.denoise(z, t, method=method, **options)
        assert needle in error.value.message
        assert error.value.code == pb.ERROR_CODE_INVALID_ARGUMENT
        # The same connection answers the next request.
        good = client.denoise(setup["z"][:1], T, method="empirical")
        assert good.shape == (1, 1, 28, 28) and np.isfinite(good).all()


def test_error_codes(setup):
    with Client(setup["server"].address, setup["token"]) as client:
        with pytest.raises(WireError) as error:
            client.denoise(setup["z"], T, method="bogus")
        assert error.value.code == pb.ERROR_CODE_INVALID_ARGUMENT
        with pytest.raises(WireError) as error:
            client.connection.call(heatmap_request=pb.HeatmapRequest(t=1.0, samples=1))
        assert error.value.code == pb.ERROR_CODE_UNKNOWN_OPERATION
        health = client.health()
        assert health.info.shape.height == 28 and health.info.image_count == 406


def test_two_clients_at_once(setup):
    z = setup["z"]
    with Client(setup["server"].address, setup["token"]) as client:
        alone = {m: client.denoise(z, T, method=m, **o) for m, o, _ in METHODS[:2]}
    results: dict[str, list] = {m: [] for m in alone}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(method: str, options: dict) -> None:
        try:
            with Client(setup["server"].address, setup["token"]) as c:
                start.wait()
                for _ in range(3):
                    results[method].append(c.denoise(z, T, method=method, **options))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(m, o)) for m, o, _ in METHODS[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for method, got in results.items():
        assert len(got) == 3
        for answer in got:
            np.testing.assert_array_equal(answer, alone[method])


def test_sigterm_drains_and_exits_0(setup, tmp_path):
    server = serve(["--token-file", setup["token"], "--data", setup["data"], "--threads", "1"], str(tmp_path / "serve.log"))
    with Client(server.address, setup["token"]) as client:
        assert client.denoise(setup["z"][:2], T, method="empirical").shape == (2, 1, 28, 28)
        with pytest.raises(WireError, match="started without --heatmaps"):
            client.denoise(setup["z"][:2], T, method="pspc-flex", lambda_=0.5)
    assert server.stop() == 0
    assert "stopped after 2 requests" in open(tmp_path / "serve.log").read()


def scrape(address: str, path: str = "/metrics") -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[str, float]:
    """Prometheus text: `name{labels} value` lines, by `name{labels}`."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_count_the_requests_a_client_sent(setup, tmp_path):
    """`pspc serve --metrics-listen`: after 3 denoise requests (one of them refused) and a health request, the
    scrape counts exactly those, by op, with the refusal by its code, and the bytes the client moved."""
    server = serve(
        ["--token-file", setup["token"], "--data", setup["data"], "--threads", "1", "--metrics-listen", "127.0.0.1:0"],
        str(tmp_path / "serve.log"),
    )
    try:
        assert scrape(server.metrics_address, "/readyz")[0] == 200
        status, body = scrape(server.metrics_address, "/healthz")
        assert status == 200 and body.strip() == "ok", body
        assert scrape(server.metrics_address, "/nowhere")[0] == 404
        with Client(server.address, setup["token"]) as client:
            client.denoise(setup["z"][:2], T, method="empirical")
            client.denoise(setup["z"][:1], T, method="pspc-square", patch_size=5)
            with pytest.raises(WireError):
                client.denoise(setup["z"][:1], T, method="no-such-method")
            client.health()
        status, text = scrape(server.metrics_address)
        assert status == 200
        got = samples(text)
        assert got['pspc_requests_total{op="denoise"}'] == 3, text
        assert got['pspc_requests_total{op="health"}'] == 1, text
        assert got['pspc_request_errors_total{op="denoise",code="invalid_argument"}'] == 1, text
        assert got['pspc_request_duration_seconds_count{op="denoise"}'] == 3, text
        # Queries in, answers out (tensors may travel zstd-compressed): thousands of bytes each way.
        assert got["pspc_bytes_received_total"] > 4 * 784 and got["pspc_bytes_sent_total"] > 3 * 784, text
        assert got["pspc_queue_depth"] == 0 and got["pspc_images_held"] == 406, text
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--listen", "127.0.0.1:0"], "--data is required"),
        (["--listen", "127.0.0.1:0", "--heatmap-times", "t.json"], "--heatmap-times needs --heatmaps"),
        (["--listen", "127.0.0.1:0", "--concurrent-requests", "0"], "--concurrent-requests must be at least 1"),
        (["--listen", "nowhere"], "nowhere"),
    ],
)
def test_command_line_errors(setup, args, needle):
    result = subprocess.run(
        [pspc_binary(), "serve", "--token-file", setup["token"], *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert needle in result.stderr, result.stderr


def test_the_same_client_speaks_to_the_network_endpoint(tmp_path):
    checkpoint = str(tmp_path / "tiny.pt")
    save_checkpoint(tiny_net(), checkpoint)
    token = tmp_path / "token"
    token.write_bytes(TOKEN + b"\n")
    server = ServerProcess(
        ["--checkpoint", checkpoint, "--token-file", str(token), "--device", "cpu", "--batch", str(BATCH)],
        str(tmp_path / "network.log"),
    )
    try:
        rng = np.random.default_rng(1)
        z = rng.standard_normal((4, 1, RES, RES))
        with Client(f"127.0.0.1:{server.port}", str(token)) as client, NetworkClient(
            "127.0.0.1", server.port, TOKEN
        ) as raw:
            assert client.kind == "network" and client.shape == (1, RES, RES)
            want = raw.denoise(z, 1.5)
            np.testing.assert_array_equal(client.denoise(z.astype(np.float32), 1.5), want)
            np.testing.assert_array_equal(client.denoise(z.astype(np.float32), 1.5, method="network"), want)
            out = client.denoiser()(torch.from_numpy(z), 1.5)
            assert out.dtype == torch.float64
            np.testing.assert_array_equal(out.numpy(), want.astype(np.float64))
            with pytest.raises(WireError) as error:
                client.denoise(z, 1.5, method="pspc-square", patch_size=3)
            assert error.value.code == pb.ERROR_CODE_INVALID_ARGUMENT
            assert "'pspc-square'" in error.value.message
            assert client.denoise(z, 1.5).shape == z.shape  # the connection goes on
    finally:
        assert server.stop() == 0
