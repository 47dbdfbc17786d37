"""The torch worker: a pspc worker on PyTorch, for GPU nodes (docs/design.md section 10).

    PYTHONPATH=scripts .venv/bin/python -m pspc_net.worker --listen 0.0.0.0:7000 --data DIR \\
        [--shards 0,3 | --placement INDEX/COUNT[/R]] --token-file F [--device cuda|cpu] [--xflip on|off]

It is interchangeable with `pspc worker`: it reads the same shard files and manifest (sizes, SHA-256s, block
checksums verified; a damaged shard stops it with an error naming the file), answers the same handshake as role
worker with the same WorkerInfo (shape, images with their x-flipped copies, shards, dataset fingerprint, x-flip),
and every partial-sum operation (empirical, PSPC crop normalizers and composite for squares and masks, moments,
LS / ELS window posteriors), per shard or merged in shard order, in float64 with the training images resident on
the device as uint8. Health, Cancel (checked between chunks of images) and the frame-size refusal behave as the
Swift worker's, so a cluster file may list both kinds and replication and failover work across them. Prints
`pspc worker listening on HOST:PORT` once serving; SIGTERM or SIGINT stops accepting, lets the requests already
taken finish (up to 30 s) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time

import numpy as np
import torch

from . import wire
from .partials import Cancelled, Crops, Moments, ShardImages, Softmax
from .proto import pspc_pb2 as pb
from .serve import FrameServer, parse_listen, read_token_or_report
from .shards import DataError, parse_shard_list, placement, read_manifest, read_shard
from .wire import WireError

# Room for everything in a reply frame but its float64 payload (Swift: WorkerService.requireFrameFits).
REPLY_OVERHEAD_BYTES = 4096
DRAIN_SECONDS = 30.0


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} pspc torch worker: {message}", file=sys.stderr, flush=True)


class WorkerService:
    """Partial requests -> partial responses over the hosted shards, without sockets (run on the compute thread).

    `shards`: (id, first index, ShardImages) of the shards served, any order.
    """

    role = pb.ROLE_WORKER
    refusals = {
        "denoise_request": "a pspc worker serves partial sums; D(z, t) comes from pspc serve or a network endpoint",
        "heatmap_request": "a pspc worker serves partial sums; heatmaps come from a network endpoint",
    }

    def __init__(
        self,
        shards: list[tuple[int, int, ShardImages]],
        shape: tuple[int, int, int],
        dataset_shards: int,
        dataset_id: str,
        xflip: bool,
        node_id: str,
        threads: int,
        max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE,
    ):
        self.shards = sorted(shards, key=lambda s: s[0])
        self.by_id = {sid: images for sid, _, images in self.shards}
        self.shape, self.node_id, self.max_frame_size = shape, node_id, max_frame_size
        c, h, w = shape
        self.info = pb.WorkerInfo(
            shape=pb.ImageShape(channels=c, height=h, width=w),
            image_count=sum(images.count for _, _, images in self.shards),
            shards=[pb.ShardInfo(id=sid, first_index=first, count=images.count) for sid, first, images in self.shards],
            threads=threads,
            dataset_shards=dataset_shards,
            dataset_id=dataset_id,
            xflip=xflip,
        )
        self.in_flight = 0
        self.served = 0
        self._lock = threading.Lock()

    @property
    def operations(self) -> dict:
        return {"partial_request": (self.evaluate, "partial_response")}

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

    # MARK: partial sums

    def evaluate(self, request: pb.PartialRequest, cancelled=lambda: False) -> pb.PartialResponse:
        """The answer of the named shards (all when none), per shard in the order asked or merged in shard order,
        as `WorkerService.evaluate` in Swift; the checks and their wording follow `PartialRequest(wire:shape:)`."""
        op = self._parse(request)
        if op[0] == "moments":
            rows = op[2]
            self._require_fits(8 * (self._dim() + rows * self._dim()) + 16)
        wanted = list(request.shards)
        for sid in wanted:
            if sid not in self.by_id:
                raise WireError.invalid_argument(f"this worker does not hold shard {sid}")
        if request.per_shard:
            if not wanted or len(set(wanted)) != len(wanted):
                raise WireError.invalid_argument("a per-shard request must name distinct shards")
            answers = []
            for sid in wanted:
                if cancelled():
                    raise Cancelled()
                answers.append(self._run(op, self.by_id[sid], cancelled))
            self._require_fits(sum(_payload_bytes(a) + 64 for a in answers))
            return pb.PartialResponse(per_shard=pb.PerShardPartials(shards=[_response(a) for a in answers]))
        selected = sorted(wanted) if wanted else [sid for sid, _, _ in self.shards]
        if not selected:
            raise WireError.invalid_argument("the request names no shard")
        merged = None
        for sid in selected:
            if cancelled():
                raise Cancelled()
            answer = self._run(op, self.by_id[sid], cancelled)
            merged = answer if merged is None else _merge(merged, answer)
        self._require_fits(_payload_bytes(merged))
        return _response(merged)

    def _dim(self) -> int:
        c, h, w = self.shape
        return c * h * w

    def _require_fits(self, payload_bytes: int) -> None:
        size = payload_bytes + REPLY_OVERHEAD_BYTES
        if size > self.max_frame_size:
            raise WireError(
                pb.ERROR_CODE_FRAME_TOO_LARGE,
                f"the answer of {size} bytes exceeds the frame limit of {self.max_frame_size} bytes",
            )

    def _run(self, op, images: ShardImages, cancelled):
        kind = op[0]
        if kind == "empirical":
            return images.empirical(op[1], op[2], cancelled)
        if kind == "crop_normalizers":
            return images.crop_normalizers(op[1], op[2], op[3], cancelled)
        if kind == "crop_composite":
            return images.crop_composite(op[1], op[2], op[3], op[4], cancelled)
        if kind == "window_posterior":
            return images.window_posterior(op[1], op[2], op[3], op[4], cancelled)
        return images.moments(op[1], op[2])

    def _parse(self, request: pb.PartialRequest):
        """The operation as a tuple, after every check a shard relies on."""
        name = request.WhichOneof("op")
        if name is None:
            from google.protobuf import unknown_fields

            unknown = len(unknown_fields.UnknownFieldSet(request)) > 0
            raise WireError.unknown_operation(
                "the partial request's operation is of a kind this build does not know"
                if unknown
                else "the partial request names no operation"
            )
        body = getattr(request, name)
        if name == "moments":
            dim = self._dim()
            if body.row_count == 0:
                if body.row_start != 0:
                    raise WireError.invalid_argument(
                        f"moments.row_start is {body.row_start} with row_count 0 (every row)"
                    )
                return ("moments", 0, dim)
            if body.row_start + body.row_count > dim:
                c, h, w = self.shape
                raise WireError.invalid_argument(
                    f"moments rows {body.row_start}..<{body.row_start + body.row_count} are outside the {dim} rows "
                    f"of {c}x{h}x{w} images"
                )
            return ("moments", body.row_start, body.row_count)
        queries = self._queries(body, f"{name}.queries")
        t = body.t
        if not (np.isfinite(t) and t > 0):
            raise WireError.invalid_argument(f"{name}.t must be positive and finite, got {t}")
        if name == "empirical":
            return ("empirical", queries, t)
        if name == "window_posterior":
            size = body.patch_size
            if size < 1 or size % 2 == 0:
                raise WireError.invalid_argument(
                    f"window_posterior.patch_size must be odd and at least 1, got {size}"
                )
            return ("window_posterior", queries, t, size, body.equivariant)
        if not body.HasField("crops"):
            raise WireError.invalid_argument(f"{name}.crops is missing")
        crops = self._crops(body.crops, f"{name}.crops")
        if name == "crop_normalizers":
            return ("crop_normalizers", queries, t, crops)
        if not body.HasField("log_z"):
            raise WireError.invalid_argument("crop_composite.log_z is missing")
        log_z = wire.array_from_tensor(body.log_z, "crop_composite.log_z", allow_negative_infinity=True)
        k = crops.count(self.shape[1], self.shape[2])
        if list(log_z.shape) != [queries.shape[0], k]:
            raise WireError.invalid_tensor(
                f"crop_composite.log_z has shape {list(log_z.shape)}, expected {[queries.shape[0], k]}"
            )
        return ("crop_composite", queries, t, crops, log_z.astype(np.float64))

    def _queries(self, body, field: str) -> np.ndarray:
        if not body.HasField("queries"):
            raise WireError.invalid_argument(f"{field} is missing")
        queries = wire.array_from_tensor(body.queries, field)
        c, h, w = self.shape
        if queries.ndim != 4:
            raise WireError.invalid_tensor(f"{field} has shape {list(queries.shape)}, expected [B, C, H, W]")
        if tuple(queries.shape[1:]) != self.shape:
            got = "x".join(str(d) for d in queries.shape[1:])
            raise WireError.invalid_argument(f"the queries are {got} images, the training set's are {c}x{h}x{w}")
        return queries.astype(np.float64)

    def _crops(self, spec: pb.CropSpec, field: str) -> Crops:
        c, h, w = self.shape
        kind = spec.WhichOneof("kind")
        if kind == "square_patch_size":
            size = spec.square_patch_size
            if size < 1:
                raise WireError.invalid_argument(f"{field}.square_patch_size must be at least 1")
            if size > h or size > w:
                raise WireError.invalid_argument(f"{field}: patch size {size} is larger than the {h}x{w} image")
            return Crops("square", patch_size=size)
        if kind != "masks":
            raise WireError.invalid_argument(f"{field} names neither a square patch size nor masks")
        masks = spec.masks
        offsets = np.asarray(masks.offsets, dtype=np.int64)
        pixels = np.asarray(masks.pixels, dtype=np.int64)
        multiplicity = np.asarray(masks.multiplicity, dtype=np.float64)
        if masks.pixel_count != h * w:
            raise WireError.invalid_argument(
                f"{field}: masks are for {masks.pixel_count} pixel positions, the images have {h * w}"
            )
        k = len(multiplicity)
        if (
            len(offsets) != k + 1
            or offsets[0] != 0
            or offsets[-1] != len(pixels)
            or (len(offsets) > 1 and np.any(np.diff(offsets) < 0))
        ):
            raise WireError.invalid_argument(
                f"{field}: mask offsets do not match {k} masks of {len(pixels)} positions"
            )
        if len(pixels) and (pixels.min() < 0 or pixels.max() >= h * w):
            bad = int(pixels[(pixels < 0) | (pixels >= h * w)][0])
            raise WireError.invalid_argument(f"{field}: a mask lists position {bad}, outside 0..<{h * w}")
        if not np.all(np.isfinite(multiplicity)):
            raise WireError.invalid_argument(f"{field}: mask multiplicities must be finite")
        return Crops("masks", offsets=offsets, pixels=pixels, multiplicity=multiplicity, pixel_count=h * w)


def _merge(a, b):
    if isinstance(a, Softmax):
        return a.merged(b)
    if isinstance(a, Moments):
        return a.merged(b)
    return a + b


def _payload_bytes(answer) -> int:
    if isinstance(answer, Softmax):
        return 8 * (answer.m.size + answer.s.size + answer.v.size)
    if isinstance(answer, Moments):
        return 8 * (answer.sum.size + answer.outer.size) + 16
    return 8 * answer.size


def _response(answer) -> pb.PartialResponse:
    """Float64 tensors, uncompressed (partial sums have little redundancy; the Swift worker sends them so too)."""
    t = lambda a: wire.tensor_from_array(np.asarray(a, dtype=np.float64), compression="none")
    if isinstance(answer, Softmax):
        return pb.PartialResponse(
            softmax=pb.SoftmaxPartialsMsg(m=t(answer.m), s=t(answer.s), v=t(answer.v), value_length=answer.value_length)
        )
    if isinstance(answer, Moments):
        return pb.PartialResponse(
            moments=pb.MomentsMsg(count=answer.count, sum=t(answer.sum), outer=t(answer.outer), row_start=answer.row_start)
        )
    return pb.PartialResponse(sums=t(answer))


# MARK: - Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pspc_net.worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--listen", type=parse_listen, required=True, help="HOST:PORT (port 0 picks a free port)")
    p.add_argument("--data", required=True, help="dataset directory written by `pspc ingest`")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--shards", default=None, help="comma-separated shard ids to serve")
    group.add_argument("--placement", default=None, help="INDEX/COUNT[/REPLICATION], as pspc worker")
    p.add_argument("--token-file", required=True, help="the shared cluster token (at least 16 bytes)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--xflip", choices=["on", "off"], default="on", help="append x-flipped copies (default on)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument(
        "--memory-fraction",
        type=float,
        default=0.5,
        help="cuda: fraction of the free device memory one chunk of work may take (default 0.5)",
    )
    p.add_argument("--node-id", default=None, help="name in the Welcome (default HOST:PID)")
    p.add_argument("--max-frame-size", type=int, default=wire.DEFAULT_MAX_FRAME_SIZE)
    p.add_argument("--handshake-timeout", type=float, default=10.0)
    p.add_argument("--idle-timeout", type=float, default=300.0)
    p.add_argument("--max-connections", type=int, default=64)
    p.add_argument("--exit-with-parent", action="store_true", help="stop when standard input closes")
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if not 0 < args.memory_fraction <= 1:
        p.error("--memory-fraction must be in (0, 1]")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


def chunk_budget(device: torch.device, fraction: float) -> int:
    """Bytes of float64 temporaries one chunk may take: a share of the free device memory on a GPU, 256 MiB on
    the CPU (the CPU's caches, not its memory, set the best size there)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(64 << 20, int(free * fraction / 4))
    return 256 << 20


def load(args):
    manifest = read_manifest(args.data)
    count = len(manifest.shards)
    if args.shards is not None:
        ids = parse_shard_list(args.shards, count)
    elif args.placement is not None:
        ids = placement(args.placement, count)
    else:
        ids = list(range(count))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    xflip = args.xflip == "on"
    hosted = []
    for sid in ids:
        pixels = read_shard(args.data, manifest, sid)
        hosted.append((sid, manifest.shards[sid].first, ShardImages(pixels, xflip, device)))
    budget = chunk_budget(device, args.memory_fraction)
    for _, _, images in hosted:
        images.budget_bytes = budget
    return WorkerService(
        hosted,
        manifest.shape,
        dataset_shards=count,
        dataset_id=manifest.fingerprint,
        xflip=xflip,
        node_id=args.node_id or f"{socket.gethostname()}:{os.getpid()}",
        threads=torch.get_num_threads(),
        max_frame_size=args.max_frame_size,
    ), manifest, ids, device


async def _serve(args, service: WorkerService, token: bytes) -> None:
    server = FrameServer(
        service,
        token,
        args.max_frame_size,
        handshake_timeout=args.handshake_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        drain_seconds=DRAIN_SECONDS,
    )
    await server.serve_until_stopped(args.listen, "worker", args.exit_with_parent)
    log("stopping: letting the requests already taken finish")
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    token = read_token_or_report(args.token_file)
    if token is None:
        return 2
    try:
        service, manifest, ids, device = load(args)
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log(
        f"shards {','.join(map(str, ids))} of {manifest.source} ({service.info.image_count} images) on {device}, "
        f"pid {os.getpid()}"
    )
    try:
        asyncio.run(_serve(args, service, token))
    except OSError as e:
        print(f"error: cannot listen on {args.listen[0]}:{args.listen[1]}: {e.strerror or e}", file=sys.stderr)
        return 1
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
