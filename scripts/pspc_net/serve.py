"""The network endpoint: D_theta(z, t) and gradient heatmaps over the pspc wire protocol (docs/design.md s.5).

    PYTHONPATH=scripts .venv/bin/python -m pspc_net.serve --checkpoint ref.pt \\
        --listen 127.0.0.1:7700 --token-file token [--device cpu|cuda] [--batch 256] [--adapter edm|vp-eps]

A connection opens with the handshake (protocol version 2, `wire.HandshakeServer`: only coordinators,
mutual HMAC proofs), which must complete within --handshake-timeout seconds (default 10) in frames of
at most 64 KiB; nothing else is accepted before it. From the Welcome on, every frame both ways is
sealed (HMAC-SHA256 tag over a per-direction sequence number, see `wire`); a frame that fails its tag
gets an ErrorReply and the connection closes. An established connection with nothing in flight that
sends nothing for --idle-timeout seconds (default 300) is closed; at most --max-connections (default
64) are served at once, and one above that gets a plain UNAVAILABLE error and is closed. Then, matched
by `request_id`:

- `DenoiseRequest{z [B, C, H, W] float64|float32, t [B], method "" or "network"}` -> `DenoiseResponse{denoised}`: D(z, t)
  computed in float32 on the device in chunks of `--batch`, sent as FLOAT32 `[B, C, H, W]` (the exact
  values the network produced; `--response-dtype float64` widens them). Swift's
  `Pspc_V1_DenoiseResponse.decoded()` reads either. Any other method (an exact denoiser, which
  `pspc serve` computes) is refused with INVALID_ARGUMENT naming it.
- `HeatmapRequest{t, samples M, seed, images, output_start, output_count, images_in_order}` ->
  `HeatmapResponse{maps, locality, sides}`: maps FLOAT64 `[H, W, H, W]` (`maps[y, x, y', x']`, output
  pixel first), locality FLOAT64 `[3]`: the mean over output pixels of the side of the smallest centred
  square holding 50 / 75 / 95 % of the map's mass (see `heatmap`). With `output_count` > 0 only the
  output pixels p = y W + x in [output_start, output_start + output_count) are computed: maps
  `[count, H, W]`, the same numbers as those rows of the whole map, sides `[count, 3]` per pixel and
  locality their mean; this is how maps larger than a frame (64x64: 134 MB) are fetched. x0 is drawn
  from `images` (uint8 `[N, C, H, W]`, used as given; with `images_in_order` image i is sample i, N =
  M) or, when that is absent or empty, from Fashion-MNIST train with its x-flipped copies
  (docs/science.md section 6).
- `HealthRequest` -> `HealthResponse{info, in_flight, load, served}`.
- `Cancel{target}`: a queued or running request (checked between chunks) is answered CANCELLED;
  the Cancel itself gets no answer. `Shutdown` stops the server when started with --allow-shutdown.

Bad requests get an `ErrorReply` (request id echoed) and the connection goes on; a frame that is too
large or does not parse, and any handshake failure, get an `ErrorReply` and the connection closes.
Requests run one at a time on one compute thread, in arrival order. Prints
`pspc network listening on HOST:PORT` once serving (port 0 picks a free port); SIGTERM or SIGINT
stops it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import torch

from . import wire
from .adapters import ADAPTERS, VP_SCHEDULES, Denoiser, load_denoiser
from .heatmap import Cancelled, gradient_heatmaps, locality, range_sides
from .proto import pspc_pb2 as pb
from .wire import WireError

# Requests one connection may have queued or running before its reads pause (back-pressure).
MAX_IN_FLIGHT_PER_CONNECTION = 64
# After an error that ends a connection: how long to drain the peer's bytes so the close is a FIN
# (the error frame arrives) rather than a reset.
LINGER_SECONDS = 2.0
MAX_HEATMAP_SAMPLES = 1_000_000
# Room for everything in a HeatmapResponse frame but the maps' payload.
FRAME_OVERHEAD_BYTES = 1024


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} pspc network: {message}", file=sys.stderr, flush=True)


class NetworkService:
    """The answers, without sockets: each request body -> response body, run on the compute thread.

    `images` supplies the default heatmap set (uint8 `[N, C, H, W]`, x-flipped on use), loaded on first
    use; None when there is none.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        batch: int = 256,
        node_id: str = "pspc-network",
        response_dtype: str = "float32",
        compression: str = "auto",
        images=None,
        threads: int | None = None,
        max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE,
    ):
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.denoiser, self.batch, self.node_id = denoiser, batch, node_id
        self.response_dtype = np.dtype(response_dtype)
        self.compression = compression
        self.max_frame_size = max_frame_size
        self._images_loader = images
        self._images: torch.Tensor | None = None
        c, h, w = denoiser.shape
        self.info = pb.WorkerInfo(
            shape=pb.ImageShape(channels=c, height=h, width=w), threads=threads or torch.get_num_threads()
        )
        self.in_flight = 0
        self.served = 0
        self._lock = threading.Lock()

    # What `FrameServer` serves: the handshake role, the requests computed on the compute thread (body name ->
    # the method answering it and the response field), and the requests of other kinds of server refused in words.
    role = pb.ROLE_NETWORK

    @property
    def operations(self) -> dict:
        return {
            "denoise_request": (self.denoise, "denoise_response"),
            "heatmap_request": (self.heatmap, "heatmap_response"),
        }

    refusals = {
        "partial_request": "a network endpoint serves denoise_request, heatmap_request and health_request, "
        "not partial sums",
    }

    # MARK: denoise

    def denoise(self, request: pb.DenoiseRequest, cancelled=lambda: False) -> pb.DenoiseResponse:
        if request.method not in ("", "network"):
            raise WireError.invalid_argument(
                f"this endpoint serves the trained network (method \"network\"), not method {request.method!r}; "
                "the exact denoisers are served by pspc serve"
            )
        if request.HasField("options") and request.options.ByteSize() > 0:
            raise WireError.invalid_argument("denoise_request.options are settings of pspc serve's methods, not the network's")
        if not request.HasField("z"):
            raise WireError.invalid_argument("denoise_request.z is missing")
        if not request.HasField("t"):
            raise WireError.invalid_argument("denoise_request.t is missing")
        z = wire.array_from_tensor(request.z, "denoise_request.z")
        t = wire.array_from_tensor(request.t, "denoise_request.t")
        self._check_images(z.shape, "denoise_request.z")
        if list(t.shape) != [z.shape[0]]:
            raise WireError.invalid_tensor(f"denoise_request.t has shape {list(t.shape)}, expected [{z.shape[0]}]")
        for i, level in enumerate(t.reshape(-1)):
            if not level > 0:
                raise WireError.invalid_argument(f"denoise_request.t[{i}] must be positive and finite, got {level}")
        out = np.empty(z.shape, dtype=np.float32)
        zt = torch.from_numpy(z.astype(np.float32))
        tt = torch.from_numpy(t.astype(np.float32))
        with torch.inference_mode():
            for start in range(0, z.shape[0], self.batch):
                if cancelled():
                    raise Cancelled()
                end = min(start + self.batch, z.shape[0])
                d = self.denoiser(zt[start:end].to(self.denoiser.device), tt[start:end].to(self.denoiser.device))
                out[start:end] = d.to(torch.float32).cpu().numpy()
        if not np.isfinite(out).all():
            raise WireError.internal("the network produced non-finite values")
        denoised = wire.tensor_from_array(out.astype(self.response_dtype, copy=False), self.compression)
        return pb.DenoiseResponse(denoised=denoised)

    def _check_images(self, shape: tuple[int, ...], field: str) -> None:
        c, h, w = self.denoiser.shape
        if len(shape) != 4 or tuple(shape[1:]) != (c, h, w):
            raise WireError.invalid_tensor(f"{field} has shape {list(shape)}, this network takes [B, {c}, {h}, {w}]")

    # MARK: heatmap

    def heatmap(self, request: pb.HeatmapRequest, cancelled=lambda: False) -> pb.HeatmapResponse:
        _, h, w = self.denoiser.shape
        ranged = request.output_count > 0
        start, count = (request.output_start, request.output_count) if ranged else (0, h * w)
        if not ranged and request.output_start != 0:
            raise WireError.invalid_argument("heatmap_request.output_start needs an output_count")
        if start + count > h * w:
            raise WireError.invalid_argument(
                f"heatmap_request asks for output pixels [{start}, {start + count}), the image has {h * w}"
            )
        # The maps travel as one float64 tensor in one frame; refuse before hours of work rather than after.
        size = count * h * w * 8 + (count * 3 * 8 if ranged else 0)
        if size + FRAME_OVERHEAD_BYTES > self.max_frame_size:
            raise WireError.invalid_argument(
                f"maps of {count} output pixels of {h}x{w} images take {size} bytes, more than a frame of "
                f"{self.max_frame_size} bytes holds: ask for fewer output pixels (output_start, output_count)"
            )
        t = request.t
        if not (np.isfinite(t) and t > 0):
            raise WireError.invalid_argument(f"heatmap_request.t must be positive and finite, got {t}")
        if not 1 <= request.samples <= MAX_HEATMAP_SAMPLES:
            raise WireError.invalid_argument(
                f"heatmap_request.samples must be in 1...{MAX_HEATMAP_SAMPLES}, got {request.samples}"
            )
        images = None
        # Absent, an empty message or [0, C, H, W]: no images, use the endpoint's own set.
        if request.HasField("images") and request.images.ByteSize() > 0:
            array = wire.array_from_tensor(request.images, "heatmap_request.images", dtypes=(pb.DTYPE_UINT8,))
            if not (array.ndim == 4 and array.shape[0] == 0):
                self._check_images(array.shape, "heatmap_request.images")
                images = torch.from_numpy(array.copy())
        if request.images_in_order and (images is None or images.shape[0] != request.samples):
            given = 0 if images is None else images.shape[0]
            raise WireError.invalid_argument(
                f"heatmap_request.images_in_order needs one image per sample: {request.samples} samples, "
                f"{given} images"
            )
        xflip = images is None
        if images is None:
            images = self.default_images()
        maps = gradient_heatmaps(
            self.denoiser,
            images,
            t,
            request.samples,
            request.seed,
            xflip=xflip,
            in_order=request.images_in_order,
            outputs=(start, count) if ranged else None,
            batch=self.batch,
            device=self.denoiser.device,
            cancelled=cancelled,
        )
        if not ranged:
            return pb.HeatmapResponse(
                maps=wire.tensor_from_array(maps, self.compression),
                locality=wire.tensor_from_array(locality(maps), "none"),
            )
        sides = range_sides(maps, start)
        return pb.HeatmapResponse(
            maps=wire.tensor_from_array(maps, self.compression),
            locality=wire.tensor_from_array(sides.mean(axis=0), "none"),
            sides=wire.tensor_from_array(sides, "none"),
        )

    def default_images(self) -> torch.Tensor:
        if self._images is None:
            if self._images_loader is None:
                raise WireError.unavailable("no images given and this endpoint has no default image set")
            try:
                images = self._images_loader()
            except (OSError, ValueError) as e:
                raise WireError.unavailable(f"no images given and the default set does not load: {e}") from None
            if tuple(images.shape[1:]) != self.denoiser.shape:
                raise WireError.unavailable(
                    f"no images given and the default set holds {list(images.shape[1:])} images, "
                    f"this network takes {list(self.denoiser.shape)}"
                )
            self._images = images
        return self._images

    # MARK: health

    def health(self) -> pb.HealthResponse:
        with self._lock:
            in_flight, served = self.in_flight, self.served
        return pb.HealthResponse(info=self.info, in_flight=in_flight, load=float(in_flight), served=served)

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.served += 1


@dataclass(eq=False)
class _Job:
    request_id: int
    cancel: threading.Event = field(default_factory=threading.Event)


class FrameServer:
    """Sockets around a service (`NetworkService`, the torch worker's `WorkerService`): asyncio connections, the
    handshake as the service's `role`, one compute thread for the service's `operations`, health, cancel and
    shutdown answered on the event loop. `drain_seconds` > 0: on `stop()` the requests already taken may finish
    for that long before they are cancelled (a worker's coordinators wait for them)."""

    def __init__(
        self,
        service: NetworkService,
        token: bytes,
        max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE,
        allow_shutdown: bool = False,
        handshake_timeout: float = 10.0,
        idle_timeout: float = 300.0,
        max_connections: int = 64,
        drain_seconds: float = 0.0,
    ):
        self.drain_seconds = drain_seconds
        self.service, self.token, self.max_frame_size = service, token, max_frame_size
        self.allow_shutdown = allow_shutdown
        self.handshake_timeout, self.idle_timeout = handshake_timeout, idle_timeout
        self.max_connections = max_connections
        self.compute = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pspc-compute")
        self.stopping = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self._jobs: set[_Job] = set()

    async def start(self, host: str, port: int) -> int:
        """Binds and starts accepting; returns the port (the one picked for port 0)."""
        self._server = await asyncio.start_server(self._accept, host, port, reuse_address=True, backlog=256)
        return self._server.sockets[0].getsockname()[1]

    async def serve_until_stopped(self, listen: tuple[str, int], what: str, exit_with_parent: bool) -> None:
        """Listens on `listen`, prints `pspc WHAT listening on HOST:PORT` and returns once SIGTERM, SIGINT, an
        allowed Shutdown or (with `exit_with_parent`) EOF on standard input asks it to stop; `stop()` follows."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if exit_with_parent:
            # EOF on stdin: the parent is gone (even after SIGKILL); stop as on SIGTERM.
            def watch_parent() -> None:
                while sys.stdin.buffer.read(4096):
                    pass
                loop.call_soon_threadsafe(self.stopping.set)

            threading.Thread(target=watch_parent, daemon=True).start()
        host, port = listen
        port = await self.start(host, port)
        shown = f"[{host}]" if ":" in host else host
        print(f"pspc {what} listening on {shown}:{port}", flush=True)
        await self.stopping.wait()

    async def stop(self) -> None:
        """Stops accepting, cancels running work at its next chunk, closes every connection."""
        if self._server is not None:
            self._server.close()
        deadline = asyncio.get_running_loop().time() + self.drain_seconds
        while self._jobs and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for job in list(self._jobs):
            job.cancel.set()
        # Closing a transport ends its connection's read loop; cancelling the task instead would make
        # asyncio's stream callback log the cancellation as an error.
        for writer in list(self._connections.values()):
            writer.close()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=LINGER_SECONDS + 1)
        await asyncio.get_running_loop().run_in_executor(None, self.compute.shutdown, True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            error = WireError(pb.ERROR_CODE_UNAVAILABLE, f"too many connections (limit {self.max_connections})")
            log(f"{writer.get_extra_info('peername')}: {error.message}; refused")
            try:
                await self._close_after(error.frame(0), reader, writer)
            finally:
                writer.close()
            return
        task = asyncio.current_task()
        self._connections[task] = writer
        try:
            await self._connection(reader, writer)
        finally:
            del self._connections[task]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        decoder = wire.FrameDecoder(min(self.max_frame_size, wire.HANDSHAKE_MAX_FRAME_SIZE))
        sealer: wire.FrameSealer | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handshake_timeout
        handshake = wire.HandshakeServer(
            self.token, role=self.service.role, node_id=self.service.node_id, info=self.service.info
        )
        jobs: dict[int, _Job] = {}
        slots = asyncio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                chunk = (1 << 20) if handshake.established else wire.HANDSHAKE_MAX_FRAME_SIZE
                timeout = self.idle_timeout if handshake.established else max(deadline - loop.time(), 0)
                try:
                    data = await asyncio.wait_for(reader.read(chunk), timeout)
                except asyncio.TimeoutError:
                    if not handshake.established:
                        error = WireError.unavailable(
                            f"the handshake did not complete within {self.handshake_timeout:g} s"
                        )
                    elif tasks:
                        continue  # requests in flight: not idle
                    else:
                        error = WireError.unavailable(f"the connection was idle for {self.idle_timeout:g} s")
                    log(f"{peer}: {error.message}; closing")
                    await self._close_after(error.frame(0), reader, writer, sealer)
                    return
                if not data:
                    return
                decoder.feed(data)
                while True:
                    try:
                        frame = decoder.next_frame()
                    except WireError as error:
                        log(f"{peer}: {error.message}; closing")
                        await self._close_after(error.frame(0), reader, writer, sealer)
                        return
                    if frame is None:
                        break
                    if not handshake.established:
                        action = handshake.receive(frame)
                        if action.kind == "fail":
                            if action.error is not None:
                                log(f"{peer}: handshake failed: {action.error.message}")
                            await self._close_after(action.frame, reader, writer)
                            return
                        if action.kind == "established":
                            # The Welcome is the first sealed frame; the client seals all after its Proof.
                            sealer = wire.FrameSealer(action.keys.server_to_client)
                            decoder.opener = wire.FrameOpener(action.keys.client_to_server)
                            decoder.max_frame_size = self.max_frame_size
                        await self._send(writer, action.frame, sealer)
                        continue
                    await slots.acquire()
                    task = asyncio.create_task(self._answer(frame, writer, jobs, sealer))
                    tasks.add(task)
                    task.add_done_callback(lambda t: (tasks.discard(t), slots.release()))
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            for job in jobs.values():
                job.cancel.set()
            for task in tasks:
                task.cancel()
            writer.close()

    async def _answer(
        self, frame: pb.Frame, writer: asyncio.StreamWriter, jobs: dict[int, _Job], sealer: wire.FrameSealer
    ) -> None:
        """Answers one authenticated frame (or, for Cancel, another frame's job)."""
        rid = frame.request_id
        try:
            name = wire.require_body(frame)
            if name == "health_request":
                reply = pb.Frame(request_id=rid, health_response=self.service.health())
            elif name in self.service.operations:
                reply = await self._compute(frame, name, jobs)
            elif name == "cancel":
                job = jobs.get(frame.cancel.target_request_id)
                if job is not None:
                    job.cancel.set()
                return
            elif name == "shutdown":
                if not self.allow_shutdown:
                    raise WireError.unknown_operation("shutdown is not enabled on this endpoint (--allow-shutdown)")
                log("shutdown requested by a peer")
                self.stopping.set()
                return
            elif name == "error":
                log(f"peer reported: {frame.error.message}")
                return
            elif name in self.service.refusals:
                raise WireError.unknown_operation(self.service.refusals[name])
            else:
                raise WireError.unexpected("a request", name)
        except WireError as error:
            reply = error.frame(rid)
        except Exception as error:  # a bug here must still answer the request
            log(f"request {rid} failed:\n{traceback.format_exc()}")
            reply = WireError.internal(f"{type(error).__name__}: {error}").frame(rid)
        await self._send(writer, reply, sealer)

    async def _compute(self, frame: pb.Frame, name: str, jobs: dict[int, _Job]) -> pb.Frame:
        rid = frame.request_id
        job = _Job(rid)
        jobs[rid] = job
        self._jobs.add(job)
        self.service.started()
        loop = asyncio.get_running_loop()
        try:
            call, key = self.service.operations[name]
            body = await loop.run_in_executor(self.compute, call, getattr(frame, name), job.cancel.is_set)
            return pb.Frame(request_id=rid, **{key: body})
        except Cancelled:
            return WireError.cancelled(rid).frame(rid)
        except WireError as error:
            return error.frame(rid)
        except Exception as error:
            if self.stopping.is_set():
                return WireError.unavailable("the server is stopping").frame(rid)
            log(f"request {rid} ({name}) failed:\n{traceback.format_exc()}")
            return WireError.internal(f"{type(error).__name__}: {error}").frame(rid)
        finally:
            self.service.finished()
            self._jobs.discard(job)
            if jobs.get(rid) is job:
                del jobs[rid]

    async def _send(
        self, writer: asyncio.StreamWriter, frame: pb.Frame | None, sealer: wire.FrameSealer | None = None
    ) -> None:
        """Sends `frame`, sealed when `sealer` (sealing and writing happen with no await between them, so
        the sequence numbers follow the order on the wire)."""
        if frame is None:
            return
        try:
            data = wire.encode_frame(frame, self.max_frame_size, sealer)
        except WireError as error:
            data = wire.encode_frame(
                WireError.internal(f"the response does not fit a frame: {error.message}").frame(frame.request_id),
                self.max_frame_size,
                sealer,
            )
        writer.write(data)
        try:
            await writer.drain()
        except ConnectionError:
            pass

    async def _close_after(
        self,
        frame: pb.Frame | None,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sealer: wire.FrameSealer | None = None,
    ) -> None:
        """Sends `frame`, then closes: our side first, then drains what the peer still sends for a moment,
        so the close is orderly and the error frame is read rather than lost to a reset."""
        try:
            await self._send(writer, frame, sealer)
            if writer.can_write_eof():
                writer.write_eof()
            deadline = asyncio.get_running_loop().time() + LINGER_SECONDS
            while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
                if not await asyncio.wait_for(reader.read(1 << 16), remaining):
                    break
        except (ConnectionError, asyncio.TimeoutError, OSError):
            pass


# The network endpoint's name for it, kept for callers.
NetworkServer = FrameServer


# MARK: - Command line


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT or [IPv6]:PORT."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def parse_shape(value: str) -> tuple[int, int, int]:
    parts = value.split(",")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected C,H,W, got {value!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pspc_net.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True, help="the network: a pspc .pt checkpoint, an EDM .pkl, TorchScript")
    p.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 0), help="HOST:PORT (default 127.0.0.1:0)")
    p.add_argument("--token-file", required=True, help="the shared cluster token (at least 16 bytes)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--batch", type=int, default=256, help="images per network call (default 256)")
    p.add_argument("--adapter", choices=ADAPTERS, default="edm", help="how the network predicts (default edm)")
    p.add_argument("--shape", type=parse_shape, default=None, help="C,H,W when the network does not say")
    p.add_argument("--vp-schedule", choices=VP_SCHEDULES, default="linear", help="vp-eps: the noise schedule")
    p.add_argument("--vp-steps", type=int, default=1000, help="vp-eps: timesteps of the schedule (default 1000)")
    p.add_argument("--vp-discrete", action="store_true", help="vp-eps: round the timestep to an integer")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--node-id", default=None, help="name in the Welcome (default network@hostname)")
    p.add_argument("--response-dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--compression", choices=["auto", "none", "zstd"], default="auto", help="of response tensors")
    p.add_argument("--max-frame-size", type=int, default=wire.DEFAULT_MAX_FRAME_SIZE)
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder for heatmaps without images")
    p.add_argument("--handshake-timeout", type=float, default=10.0, help="seconds to complete the handshake")
    p.add_argument("--idle-timeout", type=float, default=300.0, help="seconds an idle connection stays open")
    p.add_argument("--max-connections", type=int, default=64, help="connections served at once (default 64)")
    p.add_argument("--allow-shutdown", action="store_true", help="let an authenticated peer's Shutdown stop it")
    p.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when standard input closes (a parent that starts the endpoint holds it open)",
    )
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error("--batch must be >= 1")
    if not 1024 <= args.max_frame_size <= 0xFFFFFFFF:
        p.error("--max-frame-size must be in 1024...4294967295 (the 4-byte length)")
    if not args.handshake_timeout > 0 or not args.idle_timeout > 0:
        p.error("--handshake-timeout and --idle-timeout must be positive")
    if args.max_connections < 1:
        p.error("--max-connections must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


def _fashion_mnist_loader(data_dir: str | None):
    def load() -> torch.Tensor:
        from .data import load_fashion_mnist

        return load_fashion_mnist("train", root=data_dir)

    return load


async def _serve(args: argparse.Namespace, service: NetworkService, token: bytes) -> None:
    server = NetworkServer(
        service,
        token,
        args.max_frame_size,
        args.allow_shutdown,
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
    )
    await server.serve_until_stopped(args.listen, "network", args.exit_with_parent)
    log("stopping")
    await server.stop()


def read_token_or_report(path: str) -> bytes | None:
    """The cluster token of `path`, or None after saying on stderr why it cannot be used."""
    try:
        return wire.read_token(path)
    except OSError as e:
        print(f"error: {path}: cannot read the token file ({e.strerror})", file=sys.stderr)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    token = read_token_or_report(args.token_file)
    if token is None:
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        denoiser = load_denoiser(
            args.checkpoint, args.adapter, device, args.shape, args.vp_schedule, args.vp_steps, args.vp_discrete
        )
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        print(f"error: cannot load the network: {e}", file=sys.stderr)
        return 2
    node_id = args.node_id or f"network@{socket.gethostname()}"
    service = NetworkService(
        denoiser,
        batch=args.batch,
        node_id=node_id,
        response_dtype=args.response_dtype,
        compression=args.compression,
        images=_fashion_mnist_loader(args.data_dir),
        threads=torch.get_num_threads(),
        max_frame_size=args.max_frame_size,
    )
    log(f"{denoiser.describe} on {device}, shape {list(denoiser.shape)}, batch {args.batch}, pid {os.getpid()}")
    try:
        asyncio.run(_serve(args, service, token))
    except OSError as e:
        print(f"error: cannot listen on {args.listen[0]}:{args.listen[1]}: {e.strerror or e}", file=sys.stderr)
        return 1
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
