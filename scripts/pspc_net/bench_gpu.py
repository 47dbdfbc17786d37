"""One torch worker against one Swift worker, per method, on the same shards and the same requests (a benchmark,
run by scripts/bench-gpu.sh, never by the tests).

For each dataset it starts `pspc worker` (every core) and `python -m pspc_net.worker` (cuda when available, else
the CPU), sends each method's partial requests over the wire to both (all shards, merged), and prints the time
per query of each, their ratio, and how far the two answers are apart (relative difference of the posterior
means; both are float64). Methods: empirical, pspc-square (s = 5, rounds 1 and 2), pspc-flex (one disc mask of
radius 4 per pixel, rounds 1 and 2), gaussian (the moments, once per dataset: its time is reported per
dataset, not per query), ls (P = 5), els (P = 3).

    python -m pspc_net.bench_gpu --pspc .build/release/pspc --data DIR [--data DIR2 ...] --queries Q [--els-queries E]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

from . import wire
from .client import NetworkClient
from .proto import pspc_pb2 as pb

TOKEN = b"pspc-bench-gpu-token-0123456789"


def start(argv: list[str], env=None) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env)
    line = process.stdout.readline()
    if "listening on" not in line:
        process.wait(timeout=60)
        raise RuntimeError(f"{argv[0]} did not start")
    return process, int(line.strip().rsplit(":", 1)[1])


def disc_masks(height: int, width: int, radius: float) -> pb.MaskSetSpec:
    y, x = np.divmod(np.arange(height * width), width)
    masks = [np.flatnonzero((y - yy) ** 2 + (x - xx) ** 2 <= radius * radius) for yy, xx in zip(y, x)]
    offsets = np.cumsum([0] + [len(m) for m in masks]).tolist()
    pixels = np.concatenate(masks).tolist()
    return pb.MaskSetSpec(offsets=offsets, pixels=pixels, multiplicity=[1.0] * len(masks), pixel_count=height * width)


def array(tensor):
    return wire.array_from_tensor(tensor, "answer", allow_negative_infinity=True)


def means(response: pb.PartialResponse) -> np.ndarray:
    kind = response.WhichOneof("result")
    if kind == "softmax":
        m, s, v = array(response.softmax.m), array(response.softmax.s), array(response.softmax.v)
        return v / s[:, None] if v.size else m + np.log(s)
    if kind == "sums":
        return array(response.sums)
    return array(response.moments.outer)


def timed(client: NetworkClient, request: pb.PartialRequest):
    start = time.perf_counter()
    frame = client.call(partial_request=request)
    return time.perf_counter() - start, frame.partial_response


def method_requests(z: np.ndarray, t: float, shape, client: NetworkClient, method: str):
    """The requests of one method in order; round 2 takes round 1's log Z from `client`'s answer."""
    zt = wire.tensor_from_array(z, compression="none")
    c, h, w = shape
    if method == "empirical":
        yield pb.PartialRequest(empirical=pb.EmpiricalOp(queries=zt, t=t))
    elif method in ("pspc-square", "pspc-flex"):
        crops = pb.CropSpec(square_patch_size=5) if method == "pspc-square" else pb.CropSpec(masks=disc_masks(h, w, 4))
        first = pb.PartialRequest(crop_normalizers=pb.CropNormalizersOp(queries=zt, t=t, crops=crops))
        answer = yield first
        log_z = (array(answer.softmax.m) + np.log(array(answer.softmax.s))).reshape(len(z), -1)
        lz = wire.tensor_from_array(log_z, compression="none")
        yield pb.PartialRequest(crop_composite=pb.CropCompositeOp(queries=zt, t=t, crops=crops, log_z=lz))
    elif method == "ls":
        yield pb.PartialRequest(window_posterior=pb.WindowPosteriorOp(queries=zt, t=t, patch_size=5))
    elif method == "els":
        yield pb.PartialRequest(window_posterior=pb.WindowPosteriorOp(queries=zt, t=t, patch_size=3, equivariant=True))
    elif method == "gaussian":
        # In blocks of rows of about 8 MiB, as the engine asks (a whole 3x32x32 matrix exceeds a frame).
        dim = c * h * w
        step = max(1, (8 << 20) // (8 * dim))
        for start in range(0, dim, step):
            yield pb.PartialRequest(moments=pb.MomentsOp(row_start=start, row_count=min(step, dim - start)))


def run_method(client: NetworkClient, reference: NetworkClient | None, z, t, shape, method):
    """Seconds over the method's requests on `client` and its answers (round 2 fed from `reference`'s round 1,
    so that both workers answer the same round 2)."""
    total, answers = 0.0, []
    requests = method_requests(z, t, shape, reference or client, method)
    request = next(requests)
    while True:
        seconds, answer = timed(client, request)
        total += seconds
        answers.append(answer)
        try:
            request = requests.send(answer if reference is None else reference.call(partial_request=request).partial_response)
        except StopIteration:
            return total, answers


def bench(args, data: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    token_file = os.path.join(data, "..", "bench-token")
    with open(token_file, "wb") as f:
        f.write(TOKEN + b"\n")
    swift, swift_port = start([args.pspc, "worker", "--listen", "127.0.0.1:0", "--data", data, "--token-file", token_file])
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_worker, torch_port = start(
        [sys.executable, "-m", "pspc_net.worker", "--listen", "127.0.0.1:0", "--data", data,
         "--token-file", token_file, "--device", device], env=env)  # fmt: skip
    try:
        with NetworkClient("127.0.0.1", swift_port, TOKEN) as a, NetworkClient("127.0.0.1", torch_port, TOKEN) as b:
            info = a.welcome.info
            shape = (info.shape.channels, info.shape.height, info.shape.width)
            rng = np.random.default_rng(0)
            name = "x".join(map(str, shape))
            print(
                f"{name}: N = {info.image_count} (x-flip included), {len(info.shards)} shards; Swift worker "
                f"{info.threads} threads, torch worker on {device}"
                + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""),
                flush=True,
            )
            print(f"  {'method':12s} {'queries':>7s} {'swift s/q':>10s} {'torch s/q':>10s} {'ratio':>7s}  difference")
            for method in args.methods:
                count = 1 if method == "gaussian" else (args.els_queries if method == "els" else args.queries)
                z = rng.integers(0, 256, (count, *shape)) / 127.5 - 1 + args.t * rng.standard_normal((count, *shape))
                # One warm-up call each (loads kernels, fills caches), then the timed one.
                run_method(b, a, z[:1], args.t, shape, method)
                run_method(a, None, z[:1], args.t, shape, method)
                seconds_a, answers_a = run_method(a, None, z, args.t, shape, method)
                seconds_b, answers_b = run_method(b, a, z, args.t, shape, method)
                difference = max(
                    float(np.max(np.abs(means(x) - means(y))) / max(np.max(np.abs(means(x))), 1e-300))
                    for x, y in zip(answers_a, answers_b)
                )
                print(
                    f"  {method:12s} {count:7d} {seconds_a / count:10.4f} {seconds_b / count:10.4f} "
                    f"{seconds_a / seconds_b:6.1f}x  {difference:.1e}"
                    + ("   (per dataset)" if method == "gaussian" else ""),
                    flush=True,
                )
    finally:
        for process in (swift, torch_worker):
            process.terminate()
            process.wait(timeout=60)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pspc", required=True)
    p.add_argument("--data", action="append", required=True)
    p.add_argument("--queries", type=int, default=64)
    p.add_argument("--els-queries", type=int, default=8)
    p.add_argument("--t", type=float, default=1.09)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument(
        "--methods", nargs="+", default=["empirical", "pspc-square", "pspc-flex", "gaussian", "ls", "els"]
    )
    args = p.parse_args(argv)
    for data in args.data:
        bench(args, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
