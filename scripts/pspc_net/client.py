"""A blocking Python client of the network endpoint (the coordinator's side of the protocol, version 2),
for tests, benchmarks and notebooks. The Swift coordinator is the production client.

Hello and Proof go plain; every frame after the Proof is sealed (k_c2s), and every frame from the
Welcome on must verify (k_s2c), else the client closes the connection and raises the integrity
`WireError`. A plain error frame in place of the Welcome is the server's refusal and is raised as such.
"""

from __future__ import annotations

import socket

import numpy as np

from . import wire
from .proto import pspc_pb2 as pb
from .wire import WireError


class NetworkClient:
    """One authenticated connection: `denoise`, `heatmap`, `health`; `send` / `receive` for raw frames.

    Raises `WireError` with the peer's code when the endpoint answers with an ErrorReply (or when a
    frame fails its integrity check: the connection is then closed), and `ConnectionError` when it
    closes the connection. With `handshake=False` the connection stays plain (tests drive the
    handshake by hand); `encode` / `encode_payload` give the bytes `send` would send, sealed once
    the handshake is done.
    """

    def __init__(
        self,
        host: str,
        port: int,
        token: bytes,
        node_id: str = "pspc-python-client",
        timeout: float | None = 300.0,
        max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE,
        handshake: bool = True,
    ):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.max_frame_size = max_frame_size
        self.decoder = wire.FrameDecoder(min(max_frame_size, wire.HANDSHAKE_MAX_FRAME_SIZE))
        self.sealer: wire.FrameSealer | None = None
        self._next_id = 1
        self.welcome: pb.Welcome | None = None
        if handshake:
            try:
                self.welcome = self._handshake(token, node_id)
            except BaseException:
                self.close()
                raise

    def __enter__(self) -> "NetworkClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # MARK: frames

    def encode(self, frame: pb.Frame) -> bytes:
        """The bytes of `frame` as the next frame sent: sealed once the handshake is done (this uses up a
        sequence number: the bytes must be sent, and in this order)."""
        return wire.encode_frame(frame, self.max_frame_size, self.sealer)

    def encode_payload(self, payload: bytes) -> bytes:
        """As `encode`, for a payload that need not be a Frame."""
        return wire.encode_payload(payload, self.max_frame_size, self.sealer)

    def send(self, frame: pb.Frame) -> None:
        self.sock.sendall(self.encode(frame))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> pb.Frame | None:
        """The next frame, or None when the endpoint closed the connection between frames."""
        while True:
            try:
                frame = self.decoder.next_frame()
            except WireError:
                self.close()  # too large, malformed or a bad MAC: nothing after it can be trusted
                raise
            if frame is not None:
                return frame
            data = self.sock.recv(1 << 20)
            if not data:
                if self.decoder.pending_bytes:
                    raise ConnectionError("the endpoint closed the connection inside a frame")
                return None
            self.decoder.feed(data)

    def _handshake(self, token: bytes, node_id: str) -> pb.Welcome:
        client = wire.HandshakeClient(token, node_id=node_id)
        self.send(client.start())
        while True:
            frame = self.receive()
            if frame is None:
                raise ConnectionError("the endpoint closed the connection during the handshake")
            action = client.receive(frame)
            if action.kind == "fail":
                if action.frame is not None:
                    self.send(action.frame)
                raise action.error or WireError.authentication_failed()
            if action.frame is not None:
                self.send(action.frame)
            if action.kind == "send" and action.keys is not None:
                # The Proof went plain; what follows is sealed both ways. The server may still refuse
                # the proof with a plain error instead of the sealed Welcome.
                self.sealer = wire.FrameSealer(action.keys.client_to_server)
                self.decoder.opener = wire.FrameOpener(action.keys.server_to_client)
                self.decoder.plain_error_allowed = True
            if action.kind == "established":
                self.decoder.plain_error_allowed = False
                self.decoder.max_frame_size = self.max_frame_size
                return client.welcome

    def call(self, **body) -> pb.Frame:
        """Sends one request (`call(denoise_request=...)`) and returns its response frame."""
        rid = self._next_id
        self._next_id += 1
        self.send(pb.Frame(request_id=rid, **body))
        while True:
            frame = self.receive()
            if frame is None:
                raise ConnectionError("the endpoint closed the connection")
            is_error = frame.WhichOneof("body") == "error"
            if is_error and frame.request_id in (rid, 0):
                raise WireError.from_reply(frame.error)
            if frame.request_id == rid:
                return frame
            # Otherwise an answer to an earlier request this caller gave up on.

    # MARK: operations

    def denoise(self, z: np.ndarray, t: np.ndarray | float, compression: str = "auto") -> np.ndarray:
        """D(z, t): z `[B, C, H, W]` float64 (or float32), t `[B]` or one level for all; the answer as sent
        (float32 from pspc_net.serve unless it runs with --response-dtype float64)."""
        z = np.asarray(z)
        if z.dtype not in (np.float32, np.float64):
            z = z.astype(np.float64)
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), (z.shape[0],))
        request = pb.DenoiseRequest(z=wire.tensor_from_array(z, compression), t=wire.tensor_from_array(t, compression))
        frame = self.call(denoise_request=request)
        return wire.array_from_tensor(frame.denoise_response.denoised, "denoise_response.denoised")

    def heatmap(
        self,
        t: float,
        samples: int,
        seed: int = 0,
        images: np.ndarray | None = None,
        outputs: tuple[int, int] | None = None,
        in_order: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """(maps `[H, W, H, W]`, locality `[3]`); x0 from `images` (uint8 `[N, C, H, W]`; `in_order`: image
        i for sample i) or the endpoint's set. With `outputs=(start, count)`: (maps `[count, H, W]` of those
        output pixels, locality `[3]` over them, sides `[count, 3]`)."""
        request = pb.HeatmapRequest(t=t, samples=samples, seed=seed, images_in_order=in_order)
        if outputs is not None:
            request.output_start, request.output_count = outputs
        if images is not None:
            request.images.CopyFrom(wire.tensor_from_array(np.asarray(images, dtype=np.uint8)))
        frame = self.call(heatmap_request=request)
        response = frame.heatmap_response
        maps = wire.array_from_tensor(response.maps, "heatmap_response.maps")
        loc = wire.array_from_tensor(response.locality, "heatmap_response.locality")
        if outputs is None:
            return maps, loc
        return maps, loc, wire.array_from_tensor(response.sides, "heatmap_response.sides")

    def health(self) -> pb.HealthResponse:
        return self.call(health_request=pb.HealthRequest()).health_response


# MARK: - Client: one front end for pspc serve and the network endpoint

# Room in a frame for everything of a denoise request or response but its tensors' payloads.
_FRAME_OVERHEAD = 64 << 10


def parse_address(address) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or a (host, port) pair."""
    if isinstance(address, tuple):
        host, port = address
        return str(host), int(port)
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _schedule(value, name: str) -> pb.DenoiseSchedule:
    """A schedule option: "cifar10", {"t": [...], "values": [...]} or a (t, values) pair."""
    if isinstance(value, str):
        return pb.DenoiseSchedule(builtin=value)
    if isinstance(value, dict):
        t, values = value.get("t"), value.get("values")
    else:
        try:
            t, values = value
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be 'cifar10', {{'t': [...], 'values': [...]}} or (t, values)") from None
    return pb.DenoiseSchedule(t=[float(x) for x in t], values=[float(x) for x in values])


def denoise_options(**options) -> pb.DenoiseOptions:
    """`DenoiseOptions` from keyword arguments: patch_size, patch_schedule, lambda_ (or "lambda"),
    lambda_schedule, smoothing, copies, seed. Unknown names raise `TypeError`; the server checks the values
    (and which method takes which)."""
    if "lambda" in options:
        options["lambda_"] = options.pop("lambda")
    known = {"patch_size", "patch_schedule", "lambda_", "lambda_schedule", "smoothing", "copies", "seed"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown denoiser option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    out = pb.DenoiseOptions()
    given = {k: v for k, v in options.items() if v is not None}
    if "patch_size" in given:
        out.patch_size = int(given["patch_size"])
    if "patch_schedule" in given:
        out.patch_schedule.CopyFrom(_schedule(given["patch_schedule"], "patch_schedule"))
    if "lambda_" in given:
        setattr(out, "lambda", float(given["lambda_"]))
    if "lambda_schedule" in given:
        out.lambda_schedule.CopyFrom(_schedule(given["lambda_schedule"], "lambda_schedule"))
    if "smoothing" in given:
        out.smoothing = float(given["smoothing"])
    if "copies" in given:
        out.copies = int(given["copies"])
    if "seed" in given:
        out.seed = int(given["seed"])
    return out


def _to_numpy(x):
    """(numpy array, how to give a result back in x's kind): numpy arrays, torch tensors, lists, floats."""
    module = type(x).__module__
    if module.startswith("torch"):
        import torch

        array = x.detach().to("cpu").numpy()
        dtype, device = x.dtype, x.device

        def back(result: np.ndarray):
            out = torch.from_numpy(np.require(result, requirements=["C", "W"]))
            return out.to(device=device, dtype=dtype if dtype.is_floating_point else torch.float64)

        return array, back
    array = np.asarray(x)
    dtype = array.dtype if array.dtype.kind == "f" else np.dtype(np.float64)
    return array, lambda result: np.asarray(result).astype(dtype, copy=False)


class Client:
    """A blocking client of `pspc serve` (exact denoisers) and of the network endpoint (the trained
    network), over one authenticated connection (`NetworkClient`).

        with Client("127.0.0.1:7800", "token") as client:
            x0 = client.denoise(z, t=1.0, method="pspc-square", patch_size=7)

    `z` is `[B, C, H, W]` (numpy or torch, any float dtype, any device); the answer comes back as the
    same kind, dtype and device. `t` is one noise level or one per query (`[B]`). `method` is one of
    "empirical", "pspc-square", "pspc-flex", "gaussian", "cfdm" (pspc serve) or omitted / "network" (the
    network endpoint); options as `denoise_options`. A refused request raises `WireError` naming the
    problem (`.code`, `.message`), and the connection stays usable. Batches larger than a frame are
    sent as several requests (numbered with first_query_index, so cfdm's noise does not change).
    """

    def __init__(
        self,
        address,
        token_file: str | None = None,
        *,
        token: bytes | None = None,
        timeout: float | None = 3600.0,
        node_id: str = "pspc-python-client",
        max_frame_size: int = wire.DEFAULT_MAX_FRAME_SIZE,
    ):
        if (token is None) == (token_file is None):
            raise ValueError("give token_file or token")
        if token is None:
            token = wire.read_token(token_file)
        host, port = parse_address(address)
        self.address = f"{host}:{port}"
        self.connection = NetworkClient(
            host, port, token, node_id=node_id, timeout=timeout, max_frame_size=max_frame_size
        )
        self.welcome = self.connection.welcome

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    @property
    def info(self) -> pb.WorkerInfo:
        """What the server said about its data in the Welcome (shape, image count, dataset id)."""
        return self.welcome.info

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the server denoises."""
        s = self.welcome.info.shape
        return (s.channels, s.height, s.width)

    @property
    def kind(self) -> str:
        """"pspc" for pspc serve, "network" for the network endpoint."""
        return "network" if self.welcome.role == pb.ROLE_NETWORK else "pspc"

    def health(self) -> pb.HealthResponse:
        return self.connection.health()

    def denoise(self, z, t, method: str | None = None, **options):
        """D(z, t) with `method` and its options (see the class)."""
        zn, back = _to_numpy(z)
        if zn.ndim != 4:
            raise ValueError(f"z must be [B, C, H, W], got shape {list(zn.shape)}")
        if zn.dtype not in (np.float32, np.float64):
            zn = zn.astype(np.float64)
        tn, _ = _to_numpy(t)
        tn = np.asarray(tn, dtype=np.float64).reshape(-1)
        if tn.size == 1:
            tn = np.full(zn.shape[0], tn[0])
        if tn.shape != (zn.shape[0],):
            raise ValueError(f"t must be one level or one per query ({zn.shape[0]}), got {tn.size} values")
        request_options = denoise_options(**options)
        per_query = int(np.prod(zn.shape[1:])) * (zn.itemsize + 8) + 16
        chunk = max(1, (self.connection.max_frame_size - _FRAME_OVERHEAD) // per_query)
        parts = []
        for start in range(0, max(zn.shape[0], 1), chunk):
            end = min(start + chunk, zn.shape[0])
            request = pb.DenoiseRequest(
                z=wire.tensor_from_array(zn[start:end]),
                t=wire.tensor_from_array(tn[start:end]),
                method=method or "",
                options=request_options,
                first_query_index=start,
            )
            frame = self.connection.call(denoise_request=request)
            parts.append(wire.array_from_tensor(frame.denoise_response.denoised, "denoise_response.denoised"))
        return back(np.concatenate(parts) if len(parts) > 1 else parts[0])

    def denoiser(self, method: str | None = None, **options) -> "RemoteDenoiser":
        """`D(x, sigma)` as a sampling loop calls a network: see `RemoteDenoiser`."""
        denoise_options(**dict(options))  # unknown option names fail here, not at the first step
        return RemoteDenoiser(self, method, options)


class RemoteDenoiser:
    """A denoiser a sampler calls like an EDM network: `D(x, sigma)` with x `[B, C, H, W]` (numpy or
    torch) and sigma a float or `[B]` (`[B, 1, 1, 1]` too), giving D(x, sigma) in x's kind, dtype and
    device. It holds no parameters and gradients do not flow through it; `eval()` and `to()` return it
    unchanged so that code written for an `nn.Module` runs."""

    def __init__(self, client: Client, method: str | None, options: dict):
        self.client, self.method, self.options = client, method, dict(options)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.client.shape

    def __call__(self, x, sigma):
        return self.client.denoise(x, sigma, self.method, **self.options)

    forward = __call__

    def eval(self) -> "RemoteDenoiser":
        return self

    def to(self, *args, **kwargs) -> "RemoteDenoiser":
        return self

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"RemoteDenoiser({self.method or 'network'}{', ' + settings if settings else ''} @ {self.client.address})"
