"""A TCP proxy that adds latency: every byte is forwarded `--delay-ms` milliseconds after it arrived, in each
direction, so a connection through it sees its round trip grow by twice that. Order and content are kept; the
bandwidth is not limited (use tc tbf for that). For measuring the coordinator's throughput against workers far
away (the kernels here lack sch_netem).

    PYTHONPATH=scripts .venv/bin/python -m pspc_net.delay_proxy --listen 127.0.0.1:0 --target 127.0.0.1:7001 \\
        --delay-ms 5 [--ready-file F]

Prints (and writes to --ready-file) the bound HOST:PORT once listening. Several `--target`s with as many
`--listen`s run several proxies in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import socket
import sys
import time


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward everything `reader` yields to `writer`, each chunk `delay` seconds after it arrived."""
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = asyncio.Event()
    done = False

    async def sender() -> None:
        while True:
            while not queue:
                if done:
                    return
                ready.clear()
                await ready.wait()
            due, chunk = queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            queue.popleft()
            writer.write(chunk)
            await writer.drain()

    task = asyncio.create_task(sender())
    try:
        while True:
            chunk = await reader.read(1 << 16)
            if not chunk:
                break
            queue.append((time.monotonic() + delay, chunk))
            ready.set()
    except (ConnectionError, OSError):
        pass
    done = True
    ready.set()
    try:
        await task
        writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def proxy(listen: tuple[str, int], target: tuple[str, int], delay: float) -> asyncio.Server:
    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        except OSError:
            client_writer.close()
            return
        for w in (client_writer, upstream_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(
            pump(client_reader, upstream_writer, delay), pump(upstream_reader, client_writer, delay)
        )
        for w in (client_writer, upstream_writer):
            w.close()

    return await asyncio.start_server(handle, *listen)


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


async def run(args) -> None:
    if len(args.listen) != len(args.target):
        raise SystemExit("give one --listen per --target")
    servers = [await proxy(l, t, args.delay_ms / 1000) for l, t in zip(args.listen, args.target)]
    bound = []
    for s in servers:
        host, port = s.sockets[0].getsockname()[:2]
        bound.append(f"{host}:{port}")
    print(" ".join(bound), flush=True)
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(" ".join(bound) + "\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=parse_address, action="append", required=True)
    p.add_argument("--target", type=parse_address, action="append", required=True)
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay added in each direction")
    p.add_argument("--ready-file")
    asyncio.run(run(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
