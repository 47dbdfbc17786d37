"""A mixed cluster: one Swift worker (`pspc worker`) and one torch worker (`python -m pspc_net.worker --device
cpu`), both holding every shard (replication 2), behind `pspc serve --cluster FILE`, against `pspc serve --data`
(in process) on the same queries: every method at every t of the 18-step EDM grid within 1e-9 relative; then the
torch worker is killed (SIGKILL) in the middle of a run and its Swift replica answers instead.

Needs the built `pspc` binary (as test_pspc_serve.py finds it)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from pspc_net import Client
from pspc_net.proto import pspc_pb2 as pb

from .test_pspc_serve import run_pspc, serve
from .test_torch_worker import GRID, TOKEN, queries, start_swift_worker, start_torch_worker
from pspc_net.shards import read_manifest, read_shard

METHODS = [
    ("empirical", {}),
    ("pspc-square", {"patch_size": 5}),
    ("pspc-flex", {"lambda_": 0.4}),
    ("gaussian", {}),
    ("cfdm", {"smoothing": 0.1, "copies": 2, "seed": 3}),
    ("ls", {"patch_size": 3}),
    ("els", {"patch_size": 3}),
]
BOUND = 1e-9


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed-cluster")
    data, test = str(root / "data"), str(root / "test")
    run_pspc("ingest", "--source", "fashion-mnist:train", "--limit", "60", "--shards", "3", "--out", data)
    run_pspc("ingest", "--source", "fashion-mnist:test", "--limit", "2", "--out", test)
    token = root / "token"
    token.write_bytes(TOKEN + b"\n")
    y, x = np.divmod(np.arange(784), 28)
    maps = np.exp(-((y[None, :] - y[:, None]) ** 2 + (x[None, :] - x[:, None]) ** 2) / 4.0).astype(np.float32)
    heatmaps = str(root / "heatmaps.npy")
    np.save(heatmaps, maps.reshape(28, 28, 28, 28))
    swift = start_swift_worker(data, str(token), str(root / "swift.log"))
    torch_worker = start_torch_worker(data, str(token), str(root / "torch.log"))
    cluster_file = root / "cluster.json"
    cluster_file.write_text(json.dumps({"workers": [swift.address, torch_worker.address], "tokenFile": str(token)}))
    common = ["--token-file", str(token), "--heatmaps", heatmaps]
    mixed = serve(["--cluster", str(cluster_file), *common], str(root / "serve-mixed.log"))
    local = serve(["--data", data, "--threads", "1", *common], str(root / "serve-local.log"))
    images = read_shard(test, read_manifest(test), 0)
    yield {"root": root, "swift": swift, "torch": torch_worker, "mixed": mixed, "local": local,
           "token": str(token), "images": images}  # fmt: skip
    assert mixed.stop() == 0, open(root / "serve-mixed.log").read()
    assert local.stop() == 0
    assert swift.stop() == 0
    torch_worker.stop()


def relative(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def served_by(worker) -> int:
    with worker.client() as c:
        return c.call(health_request=pb.HealthRequest()).health_response.served


@pytest.mark.parametrize("method,options", METHODS, ids=[m[0] for m in METHODS])
def test_every_method_at_every_t_equals_the_in_process_engine(cluster, method, options):
    before = served_by(cluster["torch"]), served_by(cluster["swift"])
    worst = 0.0
    with Client(cluster["mixed"].address, cluster["token"]) as mixed, Client(
        cluster["local"].address, cluster["token"]
    ) as local:
        for t in GRID:
            z = queries((1, 28, 28), t, 2, seed=int(t * 1000), images=cluster["images"])
            got = mixed.denoise(z, t, method=method, **options)
            want = local.denoise(z, t, method=method, **options)
            assert got.dtype == np.float64
            worst = max(worst, relative(got, want))
    print(f"\n{method}: worst relative difference over the grid {worst:.1e}")
    assert worst <= BOUND
    # Both kinds answered part of it.
    assert served_by(cluster["torch"]) > before[0] and served_by(cluster["swift"]) > before[1]


def test_a_killed_torch_worker_is_replaced_by_its_swift_replica(cluster):
    z = queries((1, 28, 28), 0.3, 2, images=cluster["images"])
    with Client(cluster["local"].address, cluster["token"]) as local:
        want = {t: local.denoise(z, t, method="els", patch_size=5) for t in GRID[6:14]}
    results, failures = {}, []

    def run():
        try:
            with Client(cluster["mixed"].address, cluster["token"]) as mixed:
                for t in GRID[6:14]:
                    results[t] = mixed.denoise(z, t, method="els", patch_size=5)
        except Exception as error:  # reported by the assertion below
            failures.append(error)

    start = served_by(cluster["torch"])
    runner = threading.Thread(target=run)
    runner.start()
    # Kill it once it has answered part of the run, while more is in flight.
    deadline = time.monotonic() + 120
    while served_by(cluster["torch"]) < start + 2 and time.monotonic() < deadline and runner.is_alive():
        time.sleep(0.2)
    assert runner.is_alive(), "the run ended before the torch worker could be killed in its middle"
    cluster["torch"].process.kill()
    runner.join(timeout=600)
    assert not failures, failures
    assert len(results) == len(want)
    assert cluster["torch"].process.wait(timeout=10) == -9
    for t in want:
        assert relative(results[t], want[t]) <= BOUND
