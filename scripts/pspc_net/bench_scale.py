"""The scale benchmark behind scripts/bench-scale.sh (a benchmark, not a test): per-query times of every method
against N and image shape, the skilled float64 PyTorch peer side by side, memory per worker, bytes on the wire,
the coordinator's overhead through namespace hosts and throughput under added round-trip latency.

    PYTHONPATH=scripts .venv/bin/python -m pspc_net.bench_scale --pspc .build/release/pspc \\
        [--sections table,peer,cluster,latency] [--shapes 1x28x28,3x32x32,3x64x64] [--sizes 10000,40000,120000] \\
        [--methods empirical,pspc-square,pspc-flex,gaussian,cfdm] [--work /tmp/pspc-bench-scale] [--out DIR]

Data: `pspc synthesize` (training set seed 1, queries from a held-out set of seed 99), ingested once per
(shape, N) and kept in --work for later runs. Every pspc figure is the wall time of a whole `pspc denoise`
process (loading the shards included) divided by its queries, next to the engine's own time (from `pspc denoise`'s
closing line: shards loaded, masks built, workers connected before it starts); the peer's is its compute time (files read and
training images converted to float64 before its clock starts). Results: results.json and results.csv in --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

T = 1.09
LAMBDA = 0.5
PATCH = 7
SMOOTHING = 0.1

# Queries per run of each method: enough to amortise loading, few enough for a 2-core machine.
DEFAULT_QUERIES = {"empirical": 64, "pspc-square": 64, "pspc-flex": 16, "gaussian": 64, "cfdm": 8}


def log(msg: str) -> None:
    print(msg, flush=True)


def parse_shape(text: str) -> tuple[int, int, int]:
    c, h, w = (int(v) for v in text.lower().split("x"))
    return c, h, w


def shape_name(shape) -> str:
    return "x".join(map(str, shape))


class Bench:
    def __init__(self, args):
        self.args = args
        self.pspc = str(Path(args.pspc).resolve())
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.python = sys.executable
        self.env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))

    # MARK: data

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, **kw)
        if done.returncode != 0:
            raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
        return done

    def dataset(self, shape, n: int) -> tuple[Path, Path]:
        """(dataset directory, training npy) for `shape` and N, made once."""
        name = f"{shape_name(shape)}-{n}"
        directory, npy = self.work / f"data-{name}-8shards", self.work / f"train-{name}.npy"
        if not (directory / "manifest.json").exists():
            log(f"  making {name}: synthesize + ingest")
            shards = 8  # so that 1, 2 and 4 workers hold equal parts
            self.run([self.pspc, "synthesize", "--shape", shape_name(shape), "--count", str(n), "--seed", "1",
                      "--format", "npy", "--out", str(npy)])
            if directory.exists():
                shutil.rmtree(directory)
            self.run([self.pspc, "ingest", "--source", f"npy:{npy}", "--out", str(directory), "--shards", str(shards)])
        return directory, npy

    def queries(self, shape, count: int) -> Path:
        held = self.work / f"held-{shape_name(shape)}.npy"
        if not held.exists():
            self.run([self.pspc, "synthesize", "--shape", shape_name(shape), "--count", "256", "--seed", "99",
                      "--format", "npy", "--out", str(held)])
        folder = self.work / f"queries-{shape_name(shape)}-{count}"
        if not (folder / "z.npy").exists():
            self.run([self.pspc, "queries", "--source", f"npy:{held}", "--t", str(T), "--count", str(count),
                      "--seed", "7", "--out", str(folder)])
        return folder / "z.npy"

    def heatmaps(self, shape) -> Path:
        """Compact synthetic heatmaps [H, W, H, W] (a sharp peak, a faint halo, log-normal noise): lambda = 0.5
        keeps a ragged blob of a few dozen pixels around each output pixel, as trained networks' maps do."""
        _, h, w = shape
        path = self.work / f"heatmaps-{h}x{w}.npy"
        if not path.exists():
            rng = np.random.default_rng(1)
            ys, xs = np.mgrid[0:h, 0:w]
            maps = np.empty((h, w, h, w), dtype=np.float32)
            for oy in range(h):
                for ox in range(w):
                    r2 = (ys - oy) ** 2 + (xs - ox) ** 2
                    base = np.exp(-r2 / (2 * 1.5**2)) + 0.15 * np.exp(-r2 / (2 * 6.0**2))
                    maps[oy, ox] = base * np.exp(0.6 * rng.standard_normal((h, w)))
            np.save(path, maps)
        return path

    def method_args(self, method: str, shape) -> list[str]:
        if method == "pspc-square":
            return ["--patch-size", str(PATCH)]
        if method == "pspc-flex":
            return ["--heatmaps", str(self.heatmaps(shape)), "--lambda", str(LAMBDA)]
        if method == "cfdm":
            return ["--smoothing", str(SMOOTHING), "--copies", "8"]
        return []

    # MARK: one pspc process

    def denoise(self, data: Path, z: Path, method: str, shape, extra: list[str] = (), out: Path | None = None):
        """One `pspc denoise` process: {wall_s, engine_s, peak_rss_mib, stderr}. `engine_s` is the engine's own
        time (shards loaded, workers connected, masks built before it starts), from its closing line."""
        out = out or self.work / f"out-{method}.npy"
        timing = self.work / "time.txt"
        cmd = ["/usr/bin/time", "-f", "%M", "-o", str(timing), self.pspc, "denoise", "--data", str(data),
               "--xflip", "off", "--method", method, "--t", str(T), "--input", str(z), "--output", str(out),
               *self.method_args(method, shape), *extra]
        start = time.perf_counter()
        done = self.run(cmd)
        wall = time.perf_counter() - start
        engine = re.search(r"\(engine ([0-9.]+) s", done.stderr)
        if not engine:
            raise SystemExit(f"no engine time in the output of {' '.join(cmd)}:\n{done.stderr[-2000:]}")
        return {"wall_s": wall, "engine_s": float(engine.group(1)),
                "peak_rss_mib": int(timing.read_text().split()[-1]) / 1024, "stderr": done.stderr}

    # MARK: sections

    def table(self):
        log("== per-query time against N and shape (whole `pspc denoise` process, in-process engine)")
        for shape in self.args.shapes:
            for n in self.args.sizes:
                data, _ = self.dataset(shape, n)
                for method in self.args.methods:
                    q = self.args.queries or DEFAULT_QUERIES[method]
                    z = self.queries(shape, q)
                    r = self.denoise(data, z, method, shape)
                    row = {"section": "table", "shape": shape_name(shape), "n": n, "method": method, "queries": q,
                           "wall_s": r["wall_s"], "engine_s": r["engine_s"], "per_query_s": r["engine_s"] / q,
                           "process_per_query_s": r["wall_s"] / q, "peak_rss_mib": r["peak_rss_mib"]}
                    self.rows.append(row)
                    log(f"  {shape_name(shape):>8} N={n:>7} {method:<12} {1000 * r['engine_s'] / q:10.2f} ms/query "
                        f"engine, {1000 * r['wall_s'] / q:10.2f} ms/query whole process  ({q} queries, peak "
                        f"{r['peak_rss_mib']:.0f} MiB)")
                self.save()
        # Linear cost in N: each method's time at the largest N over the one a third of it.
        by = {(r["shape"], r["n"], r["method"]): r for r in self.rows if r["section"] == "table"}
        for shape in self.args.shapes:
            for method in self.args.methods:
                for n in self.args.sizes:
                    if n * 3 in self.args.sizes and (shape_name(shape), n, method) in by:
                        lo, hi = by[(shape_name(shape), n, method)], by[(shape_name(shape), 3 * n, method)]
                        ratio = hi["per_query_s"] / lo["per_query_s"]
                        self.rows.append({"section": "linearity", "shape": shape_name(shape), "method": method,
                                          "n_low": n, "n_high": 3 * n, "ratio": ratio})
                        log(f"  linear in N: {shape_name(shape)} {method}: engine time({3 * n}) / time({n}) = {ratio:.2f}")
        self.save()

    def peer(self):
        """The issue's comparison: 3x32x32, N = 40k, no x-flip, t = 1.09, 64 queries (fewer for the peer's slow
        methods: its per-query time does not depend on how many), plus PSPC-Flex at 1x28x28, N = 10k."""
        log("== against the skilled float64 PyTorch peer (same cores, one after the other)")
        cases = [((3, 32, 32), 40000, m) for m in ("pspc-square", "pspc-flex", "empirical")]
        cases.append(((1, 28, 28), 10000, "pspc-flex"))
        targets = {("3x32x32", "pspc-square"): 100, ("3x32x32", "pspc-flex"): 60, ("3x32x32", "empirical"): 2.5}
        for shape, n, method in cases:
            data, train = self.dataset(shape, n)
            q = 64
            z = self.queries(shape, q)
            mine = self.work / "mine.npy"
            wall = self.denoise(data, z, method, shape, out=mine)["wall_s"]
            pq = {"empirical": 64, "pspc-square": self.args.peer_queries, "pspc-flex": self.args.peer_queries}[method]
            zp = self.queries(shape, pq)
            theirs, timing = self.work / "peer.npy", self.work / "peer.json"
            cmd = [self.python, "-m", "pspc_net.peer", "--method", method, "--train", str(train), "--queries", str(zp),
                   "--t", str(T), "--out", str(theirs), "--json", str(timing), "--patch-size", str(PATCH),
                   "--lambda", str(LAMBDA)]
            if method == "pspc-flex":
                cmd += ["--heatmaps", str(self.heatmaps(shape))]
            self.run(cmd)
            peer = json.loads(timing.read_text())
            a, b = np.load(mine)[:pq].astype(np.float64), np.load(theirs).astype(np.float64)
            agree = float(np.abs(a - b).max())
            ratio = (peer["compute_s"] / pq) / (wall / q)
            target = targets.get((shape_name(shape), method))
            row = {"section": "peer", "shape": shape_name(shape), "n": n, "method": method, "queries": q,
                   "pspc_per_query_s": wall / q, "peer_queries": pq, "peer_per_query_s": peer["compute_s"] / pq,
                   "ratio": ratio, "target": target, "max_abs_diff": agree}
            self.rows.append(row)
            log(f"  {shape_name(shape)} N={n} {method:<12} pspc {1000 * wall / q:9.1f} ms/query   peer "
                f"{1000 * peer['compute_s'] / pq:10.1f} ms/query   {ratio:7.1f}x"
                + (f" (target {target}x)" if target else "") + f"   max |diff| {agree:.1e}")
            self.save()

    def namespace_workers(self, count: int, data: Path, threads: int):
        """Starts `count` workers, one per namespace host; returns (processes, addresses)."""
        root = Path(__file__).resolve().parents[2]
        subprocess.run([str(root / "scripts/netns.sh"), "up", str(count)], check=True)
        procs, addresses = [], []
        token = self.work / "token"
        token.write_text("bench-scale-token-0123456789\n")
        for i in range(1, count + 1):
            addr = f"10.77.{i}.2"
            proc = subprocess.Popen(
                ["ip", "netns", "exec", f"pspc-h{i}", self.pspc, "worker", "--listen", f"{addr}:7070", "--data",
                 str(data), "--placement", f"{i - 1}/{count}", "--token-file", str(token), "--xflip", "off",
                 "--threads", str(threads)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            line = proc.stdout.readline()
            if "listening on" not in line:
                raise SystemExit(f"worker {i} did not start: {line!r}")
            procs.append(proc)
            addresses.append(f"{addr}:7070")
        return procs, addresses

    def cluster_file(self, addresses: list[str]) -> Path:
        path = self.work / "cluster.yaml"
        path.write_text("workers: [" + ", ".join(addresses) + "]\ntokenFile: token\ndeadlineSeconds: 600\n")
        return path

    @staticmethod
    def wire_bytes(stderr: str) -> tuple[int, int]:
        """(sent, received) from the coordinator's `wire traffic` log line (--log-level info)."""
        for line in stderr.splitlines():
            if "wire traffic" in line:
                sent = re.search(r"sent_bytes=(\d+)", line)
                received = re.search(r"received_bytes=(\d+)", line)
                if sent and received:
                    return int(sent.group(1)), int(received.group(1))
        raise SystemExit("the coordinator did not log its wire traffic")

    @staticmethod
    def peak_rss_mib(pid: int) -> float:
        # The worker runs under `ip netns exec`, which execs it: same pid.
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cluster(self):
        log("== through namespace hosts: coordinator overhead, memory per worker, bytes on the wire")
        shape, n = self.args.cluster_shape, self.args.cluster_n
        data, _ = self.dataset(shape, n)
        manifest = json.loads((data / "manifest.json").read_text())
        total_bytes = n * int(np.prod(shape))
        for method in self.args.methods:
            q = self.args.queries or DEFAULT_QUERIES[method]
            z = self.queries(shape, q)
            base = self.denoise(data, z, method, shape, out=self.work / "base.npy")["engine_s"]
            reference = np.load(self.work / "base.npy")
            for count in (1, 2, 4):
                procs, addresses = self.namespace_workers(count, data, threads=max(1, 2 // count))
                try:
                    path = self.cluster_file(addresses)
                    out = self.work / "via-cluster.npy"
                    r = self.denoise(data, z, method, shape,
                                     extra=["--cluster", str(path), "--log-level", "info"], out=out)
                    wall, stderr = r["engine_s"], r["stderr"]
                    rss = [self.peak_rss_mib(p.pid) for p in procs]
                finally:
                    for p in procs:
                        p.send_signal(signal.SIGTERM)
                    for p in procs:
                        try:
                            p.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            p.kill()
                    subprocess.run([str(Path(__file__).resolve().parents[2] / "scripts/netns.sh"), "down"])
                sent, received = self.wire_bytes(stderr)
                same = bool(np.array_equal(np.load(out), reference))
                row = {"section": "cluster", "shape": shape_name(shape), "n": n, "method": method, "workers": count,
                       "queries": q, "in_process_s": base, "cluster_s": wall, "overhead": wall / base - 1,
                       "worker_peak_rss_mib": rss, "shard_bytes_per_worker_mib": total_bytes / count / 2**20,
                       "sent_bytes_per_query": sent / q, "received_bytes_per_query": received / q,
                       "identical_to_in_process": same, "dataset_shards": len(manifest.get("shards", []))}
                self.rows.append(row)
                log(f"  {method:<12} {count} workers: {wall:7.1f} s against {base:.1f} s in-process "
                    f"({100 * (wall / base - 1):+.0f} %), worker peak RSS {', '.join(f'{r:.0f}' for r in rss)} MiB "
                    f"(shards {total_bytes / count / 2**20:.0f} MiB each), wire {sent / q / 1024:.1f} KiB sent + "
                    f"{received / q / 1024:.1f} KiB received per query, identical: {same}")
                self.save()

    def latency(self):
        """Two loopback workers behind delaying proxies: queries per second against added round trip and the
        number of batches in flight."""
        log("== throughput with added round-trip latency (delaying proxy, 2 loopback workers)")
        shape, n = (1, 28, 28), 10000
        data, _ = self.dataset(shape, n)
        q = 1024
        z = self.queries(shape, q)
        token = self.work / "token"
        token.write_text("bench-scale-token-0123456789\n")
        workers = []
        try:
            for i in range(2):
                p = subprocess.Popen([self.pspc, "worker", "--listen", "127.0.0.1:0", "--data", str(data),
                                      "--placement", f"{i}/2", "--token-file", str(token), "--xflip", "off",
                                      "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                line = p.stdout.readline()
                workers.append((p, line.strip().rsplit(" ", 1)[-1]))
            for rtt in (0, 10, 50):
                proxy = None
                addresses = [a for _, a in workers]
                if rtt:
                    args = [self.python, "-m", "pspc_net.delay_proxy", "--delay-ms", str(rtt / 2)]
                    for a in addresses:
                        args += ["--listen", "127.0.0.1:0", "--target", a]
                    proxy = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=self.env)
                    addresses = proxy.stdout.readline().split()
                try:
                    path = self.cluster_file(addresses)
                    for inflight in (1, 3, 8):
                        wall = self.denoise(data, z, "empirical", shape, extra=[
                            "--cluster", str(path), "--batch-size", "32", "--batches-in-flight", str(inflight)])["engine_s"]
                        self.rows.append({"section": "latency", "added_rtt_ms": rtt, "batches_in_flight": inflight,
                                          "batch_size": 32, "queries": q, "wall_s": wall, "queries_per_s": q / wall})
                        log(f"  +{rtt:>2} ms RTT, {inflight} batches in flight: {q / wall:7.1f} queries/s ({wall:.2f} s)")
                        self.save()
                finally:
                    if proxy:
                        proxy.terminate()
                        proxy.wait()
        finally:
            for p, _ in workers:
                p.terminate()
                p.wait()

    def save(self):
        (self.out / "results.json").write_text(json.dumps(self.rows, indent=1))
        keys = sorted({k for r in self.rows for k in r})
        with open(self.out / "results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: (json.dumps(v) if isinstance(v, list) else v) for k, v in r.items()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pspc", default="pspc")
    p.add_argument("--sections", default="table,peer,cluster,latency")
    p.add_argument("--shapes", default="1x28x28,3x32x32,3x64x64")
    p.add_argument("--sizes", default="10000,40000,120000")
    p.add_argument("--methods", default="empirical,pspc-square,pspc-flex,gaussian,cfdm")
    p.add_argument("--queries", type=int, default=None, help="queries per pspc run (default: per method)")
    p.add_argument("--peer-queries", type=int, default=8, help="queries the peer times for square and flex")
    p.add_argument("--cluster-shape", default="3x32x32")
    p.add_argument("--cluster-n", type=int, default=40000)
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "pspc-bench-scale"))
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    a.shapes = [parse_shape(s) for s in a.shapes.split(",") if s]
    a.sizes = [int(s) for s in a.sizes.split(",") if s]
    a.methods = [m for m in a.methods.split(",") if m]
    a.cluster_shape = parse_shape(a.cluster_shape)
    a.out = a.out or os.path.join(a.work, "results")
    bench = Bench(a)
    start = time.time()
    for section in a.sections.split(","):
        getattr(bench, section)()
    log(f"done in {time.time() - start:.0f} s; results in {a.out}/results.json and results.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
