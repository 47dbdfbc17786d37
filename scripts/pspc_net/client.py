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
