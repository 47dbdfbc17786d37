"""Throughput of the network endpoint next to calling the network directly (scripts/bench-network.sh).

    PYTHONPATH=scripts .venv/bin/python -m pspc_net.bench --checkpoint ref.pt \\
        --endpoint 127.0.0.1:PORT --token-file token [--batch 256] [--repeats 3] [--threads 1]

Both sides see the same batches: z = x + t eps with x uniform in [-1, 1] and t log-uniform on
[0.002, 80], one t per image. "direct" is `net(z, t)` on a float32 batch in this process, with no
gradients; "protocol" is a DenoiseRequest (z and t float64, automatic zstd, as the Swift coordinator
sends them) answered by the endpoint, timed from the first byte sent to the decoded float32 answer.
Each figure is the median over `--repeats` batches after one warm-up batch. Run the endpoint and this
client with the same thread count and nothing else busy: they take turns, never run at once.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from .client import NetworkClient
from .model import load_checkpoint
from .serve import parse_listen
from .wire import read_token


def batches(count: int, batch: int, shape: tuple[int, int, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        t = np.exp(rng.uniform(np.log(0.002), np.log(80.0), batch))
        z = rng.uniform(-1, 1, (batch, *shape)) + t[:, None, None, None] * rng.standard_normal((batch, *shape))
        yield z, t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--endpoint", type=parse_listen, required=True, help="HOST:PORT of a running endpoint")
    p.add_argument("--token-file", required=True)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    net = load_checkpoint(args.checkpoint).to(args.device)
    c = net.config
    shape = (int(c["img_channels"]), int(c["img_resolution"]), int(c["img_resolution"]))
    work = list(batches(args.repeats + 1, args.batch, shape))

    def direct(z: np.ndarray, t: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            zt = torch.from_numpy(z.astype(np.float32)).to(args.device)
            tt = torch.from_numpy(t.astype(np.float32)).to(args.device)
            return net(zt, tt).cpu().numpy()

    direct_s, protocol_s, worst = [], [], 0.0
    host, port = args.endpoint
    with NetworkClient(host, port, read_token(args.token_file), node_id="pspc-bench") as client:
        for i, (z, t) in enumerate(work):
            start = time.perf_counter()
            expected = direct(z, t)
            middle = time.perf_counter()
            got = client.denoise(z, t)
            end = time.perf_counter()
            worst = max(worst, float(np.abs(got - expected).max()))
            if i > 0:  # the first batch warms both up
                direct_s.append(middle - start)
                protocol_s.append(end - middle)

    d, q = statistics.median(direct_s), statistics.median(protocol_s)
    print(
        f"network endpoint, batches of {args.batch} {shape[0]}x{shape[1]}x{shape[2]} images, {args.device}, "
        f"{args.threads} torch thread(s), median of {args.repeats}:"
    )
    print(f"  direct    net(z, t) in process         {args.batch / d:9.1f} images/s  ({d * 1e3:8.1f} ms per batch)")
    print(f"  protocol  DenoiseRequest over TCP      {args.batch / q:9.1f} images/s  ({q * 1e3:8.1f} ms per batch)")
    print(f"  protocol / direct time: {q / d:.3f}; largest |difference| {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
