"""Throughput of `pspc serve` for single-query requests against one batch (scripts/bench-serve.sh).

    PYTHONPATH=scripts .venv/bin/python -m pspc_net.bench_serve --pspc .build/release/pspc --data DIR \\
        [--local-workers N] [--threads N] [--queries 1000] [--method empirical] [--t 1.0]

Starts `pspc serve` on a free port over the dataset DIR (in process, or on N local workers), then sends `--queries` requests of one query each, one after another on one connection (what a sampler that
denoises one image at a time does), then the same queries as one request, and prints the queries/s of
each and their ratio. The queries are z = x + t eps with x uniform in [-1, 1]; both runs answer the same
queries, and the answers are checked equal (to 1e-12: batches of other sizes round differently).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from .client import Client
from .launch import PSPCServe


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pspc", required=True, help="the pspc binary")
    p.add_argument("--data", required=True, help="dataset directory written by pspc ingest")
    p.add_argument("--local-workers", type=int, default=0, help="0: the shards in the server's process")
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--method", default="empirical")
    p.add_argument("--patch-size", type=int, default=None, help="pspc-square")
    p.add_argument("--t", type=float, default=1.0)
    args = p.parse_args(argv)
    options = {"patch_size": args.patch_size} if args.patch_size else {}
    with tempfile.TemporaryDirectory() as tmp:
        token = os.path.join(tmp, "token")
        with open(token, "w") as f:
            f.write(os.urandom(32).hex())
        engine = ["--data", args.data] + (["--local-workers", str(args.local_workers)] if args.local_workers else [])
        engine += ["--threads", str(args.threads)] if args.threads else []
        with PSPCServe(args.pspc, ["--token-file", token, *engine], os.path.join(tmp, "serve.log")) as server:
            with Client(server.address, token) as client:
                rng = np.random.default_rng(0)
                shape, images = client.shape, client.info.image_count
                z = rng.uniform(-1, 1, (args.queries, *shape)) + args.t * rng.standard_normal((args.queries, *shape))
                client.denoise(z[:1], args.t, method=args.method, **options)  # warm-up (and the Gaussian model)
                start = time.perf_counter()
                singles = np.concatenate(
                    [client.denoise(z[i : i + 1], args.t, method=args.method, **options) for i in range(len(z))]
                )
                single_s = time.perf_counter() - start
                start = time.perf_counter()
                batch = client.denoise(z, args.t, method=args.method, **options)
                batch_s = time.perf_counter() - start
    np.testing.assert_allclose(singles, batch, rtol=0, atol=1e-12)
    n = args.queries
    print(f"pspc serve {args.method} at t={args.t:g}, {images} training images of {list(shape)}")
    print(f"  {n} requests of 1 query: {single_s:8.3f} s  {n / single_s:10.1f} queries/s  ({1e3 * single_s / n:.2f} ms per request)")
    print(f"  1 request of {n} queries: {batch_s:8.3f} s  {n / batch_s:10.1f} queries/s")
    print(f"  batch / single throughput: {single_s / batch_s:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
