"""The pspc wire protocol, version 2, in Python (docs/design.md section 5; Swift: Sources/PSPCWire).

Byte for byte what the Swift side speaks. A plain frame:

```
 +--------------------------------+-------------------------------------------+
 | length N (uint32, big-endian)  | N bytes: one serialized pspc.v1.Frame P   |
 +--------------------------------+-------------------------------------------+
```

and, once the handshake has fixed the session keys, a sealed one:

```
 +--------------------------------+---------------------------+---------------+
 | length N (uint32, big-endian)  | P (N - 32 bytes)          | tag (32 bytes)|
 +--------------------------------+---------------------------+---------------+
 tag = HMAC-SHA256(k_dir, seq (uint64, big-endian) || P)
```

- Handshake: Hello{magic, version 2, role, nonce cn} -> Challenge{nonce sn, proof} -> Proof -> Welcome.
  `HandshakeServer` / `HandshakeClient` are plain state machines over frames, the same states, checks
  (magic, then version, then role, then nonce) and error codes as Handshake.swift. Proofs are
  HMAC-SHA256(token, label || nonces) with labels "pspc-server" / "pspc-client".
- Session keys (`SessionKeys.derive`): k_c2s = HMAC-SHA256(token, "pspc-session-c2s" || cn || sn),
  k_s2c = HMAC-SHA256(token, "pspc-session-s2c" || cn || sn). `seq` counts the sealed frames sent in
  that direction from 0 (`FrameSealer` / `FrameOpener`), so a replayed, reordered or dropped frame
  fails its tag as surely as a changed bit.
- What is sealed: client -> server every frame after the Proof (Hello and Proof are plain);
  server -> client the Welcome (seq 0) and every frame after it. Hello, Challenge, Proof and the error
  frames of a handshake that does not complete are plain. A frame that fails its tag (or is shorter
  than the tag) ends the connection. The one plain frame a sealed receiver reads: the client awaiting
  the Welcome takes a plain `error` frame as the server's refusal (`FrameDecoder.plain_error_allowed`);
  unauthenticated, it can only end the connection.
- `FrameDecoder` only parses (bytes in, frames or "need more" out); it checks N against its limit as
  soon as the 4 length bytes are there, before buffering the frame: 64 KiB until the handshake is done
  (`HANDSHAKE_MAX_FRAME_SIZE`), then the connection's limit (64 MiB by default). N counts the tag.
- Tensors: little-endian row-major bytes, dtype FLOAT64 / FLOAT32 / UINT8, compression NONE or ZSTD
  (one zstd frame whose header states the content size, equal to `raw_size`, with zstd's content
  checksum when this side compresses). UNSPECIFIED or unknown enum values, shape / byte-count
  mismatches, a zstd body that does not decompress (or fails its checksum) and (for float fields) NaN
  or inf are rejected.

No sockets here: `serve` and `client` move the bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

import numpy as np
import zstandard

from .proto import pspc_pb2 as pb

PROTOCOL_VERSION = 2
MAGIC = b"PSPC"
NONCE_SIZE = 32
HEADER_SIZE = 4
# The HMAC-SHA256 tag that ends every sealed frame.
TAG_SIZE = 32
# 64 MiB, as FrameCodec.defaultMaxFrameSize.
DEFAULT_MAX_FRAME_SIZE = 64 << 20
# A receiver's limit until the handshake is established: no handshake frame comes near it.
HANDSHAKE_MAX_FRAME_SIZE = 64 << 10
# The largest uncompressed tensor accepted (WireLimits.maxTensorBytes): bounds what zstd can expand to.
DEFAULT_MAX_TENSOR_BYTES = 1 << 30
# Automatic compression (Tensor+Wire.swift): payloads of at least 4096 bytes are zstd-compressed when
# that saves at least 10 % of them; level 3 as Zstd.compress.
COMPRESSION_THRESHOLD = 4096
MINIMUM_SAVING = 0.10
ZSTD_LEVEL = 3

SERVER_LABEL = b"pspc-server"
CLIENT_LABEL = b"pspc-client"
C2S_LABEL = b"pspc-session-c2s"
S2C_LABEL = b"pspc-session-s2c"
MIN_TOKEN_BYTES = 16

_ELEMENT = {pb.DTYPE_FLOAT64: np.dtype("<f8"), pb.DTYPE_FLOAT32: np.dtype("<f4"), pb.DTYPE_UINT8: np.dtype("u1")}
_DTYPE_OF = {np.dtype(element.str[1:]): dtype for dtype, element in _ELEMENT.items()}


# MARK: - Errors


class WireError(Exception):
    """A rejected frame, handshake or message: `code` (pb.ErrorCode) goes to the peer with `message`.

    The messages read as WireError.swift's descriptions.
    """

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> pb.ErrorReply:
        return pb.ErrorReply(code=self.code, message=self.message)

    def frame(self, request_id: int = 0) -> pb.Frame:
        """An ErrorReply frame about this error, echoing `request_id` (0 for the connection)."""
        return pb.Frame(request_id=request_id, error=self.reply())

    @classmethod
    def frame_too_large(cls, length: int, limit: int) -> "WireError":
        return cls(pb.ERROR_CODE_FRAME_TOO_LARGE, f"frame of {length} bytes exceeds the limit of {limit} bytes")

    @classmethod
    def malformed(cls, reason: str) -> "WireError":
        return cls(pb.ERROR_CODE_MALFORMED_FRAME, f"malformed frame: {reason}")

    @classmethod
    def bad_magic(cls, got: bytes) -> "WireError":
        hexed = " ".join(f"{b:X}" for b in got[:8])
        return cls(pb.ERROR_CODE_BAD_MAGIC, f"bad magic [{hexed}]: the peer does not speak the pspc protocol")

    @classmethod
    def unsupported_version(cls, got: int) -> "WireError":
        return cls(
            pb.ERROR_CODE_UNSUPPORTED_VERSION,
            f"unsupported protocol version {got} (this side speaks version {PROTOCOL_VERSION})",
        )

    @classmethod
    def authentication_failed(cls) -> "WireError":
        return cls(
            pb.ERROR_CODE_AUTHENTICATION_FAILED, "authentication failed: the peer does not hold the same cluster token"
        )

    @classmethod
    def integrity_failed(cls, seq: int) -> "WireError":
        return cls(pb.ERROR_CODE_AUTHENTICATION_FAILED, f"frame {seq} failed its integrity check (bad MAC)")

    @classmethod
    def role_not_accepted(cls, role: int) -> "WireError":
        return cls(
            pb.ERROR_CODE_AUTHENTICATION_FAILED,
            f"this endpoint does not accept connections from a {_enum_name(pb.Role, role)} peer",
        )

    @classmethod
    def unexpected(cls, expected: str, got: str) -> "WireError":
        return cls(pb.ERROR_CODE_UNEXPECTED_MESSAGE, f"unexpected message: expected {expected}, got {got}")

    @classmethod
    def unknown_enum(cls, field: str, value: int) -> "WireError":
        what = "the unspecified value 0" if value == 0 else f"the unknown value {value}"
        return cls(pb.ERROR_CODE_INVALID_ARGUMENT, f"{field} holds {what}")

    @classmethod
    def unknown_operation(cls, what: str) -> "WireError":
        return cls(pb.ERROR_CODE_UNKNOWN_OPERATION, f"unknown operation: {what}")

    @classmethod
    def invalid_tensor(cls, reason: str) -> "WireError":
        return cls(pb.ERROR_CODE_INVALID_ARGUMENT, f"invalid tensor: {reason}")

    @classmethod
    def invalid_argument(cls, reason: str) -> "WireError":
        return cls(pb.ERROR_CODE_INVALID_ARGUMENT, f"invalid argument: {reason}")

    @classmethod
    def cancelled(cls, request_id: int) -> "WireError":
        return cls(pb.ERROR_CODE_CANCELLED, f"request {request_id} was cancelled")

    @classmethod
    def unavailable(cls, reason: str) -> "WireError":
        return cls(pb.ERROR_CODE_UNAVAILABLE, f"unavailable: {reason}")

    @classmethod
    def internal(cls, reason: str) -> "WireError":
        return cls(pb.ERROR_CODE_INTERNAL, f"internal error: {reason}")

    @classmethod
    def from_reply(cls, reply: pb.ErrorReply) -> "WireError":
        """The error a peer reported, with its code and message as sent."""
        return cls(reply.code, reply.message)


def _enum_name(enum, value: int) -> str:
    try:
        return enum.Name(value)
    except ValueError:
        return str(value)


def body_name(frame: pb.Frame) -> str:
    """The proto field name of the frame's body ("hello", "denoise_request", ...) or "nothing"."""
    return frame.WhichOneof("body") or "nothing"


# MARK: - Session integrity


@dataclass(frozen=True)
class SessionKeys:
    """The two 32-byte keys of an established connection, one per direction."""

    client_to_server: bytes
    server_to_client: bytes

    @classmethod
    def derive(cls, token: bytes, client_nonce: bytes, server_nonce: bytes) -> "SessionKeys":
        """k_c2s / k_s2c = HMAC-SHA256(token, "pspc-session-c2s" / "pspc-session-s2c" || cn || sn)."""
        nonces = client_nonce + server_nonce
        return cls(
            hmac.new(token, C2S_LABEL + nonces, hashlib.sha256).digest(),
            hmac.new(token, S2C_LABEL + nonces, hashlib.sha256).digest(),
        )


def frame_tag(key: bytes, seq: int, payload: bytes) -> bytes:
    """HMAC-SHA256(key, seq as 8 bytes big-endian || payload): the tag of the sealed frame number `seq`."""
    return hmac.new(key, seq.to_bytes(8, "big") + payload, hashlib.sha256).digest()


class FrameSealer:
    """The sending side of one direction: `seal(P)` is P || tag, the tag over the next sequence number."""

    def __init__(self, key: bytes):
        self._key = key
        self.seq = 0

    def seal(self, payload: bytes) -> bytes:
        tag = frame_tag(self._key, self.seq, payload)
        self.seq += 1
        return payload + tag


class FrameOpener:
    """The receiving side of one direction: `open(P || tag)` is P when the tag verifies for the next
    sequence number, else `WireError.integrity_failed` (and the connection must end)."""

    def __init__(self, key: bytes):
        self._key = key
        self.seq = 0

    def verifies(self, sealed: bytes) -> bool:
        """Whether `sealed` is the next frame, without consuming it."""
        if len(sealed) < TAG_SIZE:
            return False
        payload, tag = sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]
        return hmac.compare_digest(tag, frame_tag(self._key, self.seq, payload))

    def open(self, sealed: bytes) -> bytes:
        if not self.verifies(sealed):
            raise WireError.integrity_failed(self.seq)
        self.seq += 1
        return sealed[:-TAG_SIZE]


# MARK: - Frames


def encode_payload(
    payload: bytes, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, sealer: FrameSealer | None = None
) -> bytes:
    """Length prefix, then `payload` (sealed by `sealer` when given; N counts the tag). Refuses a frame
    above the limit, before sealing (the sequence number is not used up), rather than send what the peer
    would reject."""
    length = len(payload) + (TAG_SIZE if sealer is not None else 0)
    if length > max_frame_size:
        raise WireError.frame_too_large(length, max_frame_size)
    body = sealer.seal(payload) if sealer is not None else payload
    return struct.pack(">I", length) + body


def encode_frame(
    frame: pb.Frame, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, sealer: FrameSealer | None = None
) -> bytes:
    """The bytes that travel for `frame`: length prefix, then the protobuf (and its tag when `sealer`)."""
    return encode_payload(frame.SerializeToString(), max_frame_size, sealer)


def parse_frame(payload: bytes) -> pb.Frame:
    """`payload` as a Frame, or `WireError.malformed`."""
    frame = pb.Frame()
    try:
        frame.ParseFromString(payload)
    except Exception as e:  # protobuf raises DecodeError, and others on some runtimes
        raise WireError.malformed(f"{len(payload)} bytes do not parse as a pspc.v1.Frame ({e})") from None
    return frame


class FrameDecoder:
    """Turns bytes into frames. `feed` appends what arrived; `next_frame` returns the next whole frame,
    or None while it is incomplete, and raises `WireError` (frame too large, malformed, bad MAC) at a bad one.

    The length is checked against `max_frame_size` as soon as its 4 bytes are there, so a peer announcing
    a huge frame is refused before any of it is buffered. With an `opener`, every frame must be sealed;
    `plain_error_allowed` (the client awaiting the Welcome) also lets through a plain frame whose body is
    `error`, until the first sealed frame verifies. The connection sets `opener` and raises
    `max_frame_size` between frames, when its handshake says so.
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, opener: FrameOpener | None = None):
        if not 0 <= max_frame_size <= 0xFFFFFFFF:
            raise ValueError("the frame limit must fit the 4-byte length")
        self.max_frame_size = max_frame_size
        self.opener = opener
        self.plain_error_allowed = False
        self._buffer = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes received that do not make a whole frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> pb.Frame | None:
        if len(self._buffer) < HEADER_SIZE:
            return None
        (length,) = struct.unpack_from(">I", self._buffer)
        if length > self.max_frame_size:
            raise WireError.frame_too_large(length, self.max_frame_size)
        if len(self._buffer) < HEADER_SIZE + length:
            return None
        body = bytes(self._buffer[HEADER_SIZE : HEADER_SIZE + length])
        del self._buffer[: HEADER_SIZE + length]
        if self.opener is None:
            return parse_frame(body)
        if self.plain_error_allowed and not self.opener.verifies(body):
            try:
                plain = parse_frame(body)
            except WireError:
                plain = None
            if plain is not None and plain.WhichOneof("body") == "error":
                return plain
        payload = self.opener.open(body)
        self.plain_error_allowed = False
        return parse_frame(payload)

    def frames(self) -> list[pb.Frame]:
        """Every whole frame buffered, in order."""
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out


def require_body(frame: pb.Frame) -> str:
    """The body's name, or `unknown_operation` for an empty body or one of a kind this build does not know."""
    name = frame.WhichOneof("body")
    if name is None:
        from google.protobuf import unknown_fields

        newer = len(unknown_fields.UnknownFieldSet(frame)) > 0
        raise WireError.unknown_operation(
            "the frame's body is of a kind this build does not know" if newer else "the frame carries no body"
        )
    return name


# MARK: - Tensors


def zstd_content_size(data: bytes) -> int | None:
    """The Frame_Content_Size of a zstd frame header (RFC 8878 section 3.1.1.1); None when the bytes do
    not start a zstd frame or its header leaves the size out (as Tensor+Wire.swift's zstdContentSize)."""
    if len(data) < 6 or data[:4] != b"\x28\xb5\x2f\xfd":
        return None
    descriptor = data[4]
    if descriptor & 0x08:  # reserved bit
        return None
    single_segment = bool(descriptor & 0x20)
    dictionary_id_size = (0, 1, 2, 4)[descriptor & 0x03]
    content_size_size = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    start = 5 + (0 if single_segment else 1) + dictionary_id_size
    if content_size_size == 0 or len(data) < start + content_size_size:
        return None
    value = int.from_bytes(data[start : start + content_size_size], "little")
    return value + 256 if content_size_size == 2 else value


def tensor_from_array(array: np.ndarray, compression: str = "auto") -> pb.Tensor:
    """A tensor holding `array` (float64, float32 or uint8; any shape) little-endian, row-major.

    `compression`: "auto" (zstd when the payload has at least 4096 bytes and zstd saves 10 % of it),
    "none" or "zstd" (always), as TensorCompression in Swift.
    """
    array = np.asarray(array)
    dtype = _DTYPE_OF.get(array.dtype)
    if dtype is None:
        raise TypeError(f"no wire dtype for numpy {array.dtype}")
    raw = np.ascontiguousarray(array, dtype=_ELEMENT[dtype]).tobytes()
    payload, kind = raw, pb.COMPRESSION_NONE
    if compression not in ("auto", "none", "zstd"):
        raise ValueError(f"unknown compression {compression!r}")
    if compression == "zstd" or (compression == "auto" and len(raw) >= COMPRESSION_THRESHOLD):
        compressed = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_content_size=True, write_checksum=True
        ).compress(raw)
        if compression == "zstd" or len(compressed) <= len(raw) * (1 - MINIMUM_SAVING):
            payload, kind = compressed, pb.COMPRESSION_ZSTD
    return pb.Tensor(dtype=dtype, shape=list(array.shape), data=payload, compression=kind, raw_size=len(raw))


@dataclass(frozen=True)
class TensorLimits:
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES


def array_from_tensor(
    tensor: pb.Tensor,
    field: str,
    dtypes: tuple[int, ...] = (pb.DTYPE_FLOAT64, pb.DTYPE_FLOAT32),
    limits: TensorLimits = TensorLimits(),
    allow_negative_infinity: bool = False,
) -> np.ndarray:
    """The tensor's values as a numpy array of its shape and dtype, after the checks of Tensor+Wire.swift:
    known dtype and compression, no negative dimension, size within `limits`, `raw_size` agreeing with the
    shape, the payload holding exactly that many bytes (a zstd payload: one frame stating that content
    size and expanding to it), and the dtype one of `dtypes`. Float values must be finite (or -inf, the log of an
    empty sum, with `allow_negative_infinity`)."""
    element = _ELEMENT.get(tensor.dtype)
    if element is None:
        raise WireError.unknown_enum(f"{field}.dtype", tensor.dtype)
    if tensor.compression not in (pb.COMPRESSION_NONE, pb.COMPRESSION_ZSTD):
        raise WireError.unknown_enum(f"{field}.compression", tensor.compression)
    shape = list(tensor.shape)
    # Every dimension, and the product of the non-zero ones, must fit the limit.
    non_zero_bytes, empty = element.itemsize, False
    for axis, dimension in enumerate(shape):
        if dimension < 0:
            raise WireError.invalid_tensor(f"{field} has a negative dimension {dimension} (axis {axis} of {shape})")
        if dimension == 0:
            empty = True
            continue
        non_zero_bytes *= dimension
        if non_zero_bytes > limits.max_tensor_bytes:
            raise WireError.invalid_tensor(
                f"{field} of shape {shape} exceeds the limit of {limits.max_tensor_bytes} bytes"
            )
    byte_count = 0 if empty else non_zero_bytes
    dtype_name = _enum_name(pb.DType, tensor.dtype)
    if tensor.raw_size != byte_count:
        raise WireError.invalid_tensor(
            f"{field} states raw_size {tensor.raw_size}, but shape {shape} of {dtype_name} takes {byte_count} bytes"
        )
    if tensor.compression == pb.COMPRESSION_ZSTD:
        if zstd_content_size(tensor.data) != byte_count:
            raise WireError.invalid_tensor(
                f"{field} is not one zstd frame stating its content size of {byte_count} bytes"
            )
        try:
            decompressor = zstandard.ZstdDecompressor().decompressobj()
            raw = decompressor.decompress(tensor.data)
            whole = decompressor.eof and not decompressor.unused_data
        except zstandard.ZstdError as e:  # a corrupted body, a failed content checksum
            raise WireError.invalid_tensor(f"{field} does not decompress: its zstd body is corrupt ({e})") from None
        if not whole or len(raw) != byte_count:
            raise WireError.invalid_tensor(f"{field} does not decompress to {byte_count} bytes")
    else:
        raw = tensor.data
        if len(raw) != byte_count:
            raise WireError.invalid_tensor(f"{field} carries {len(raw)} bytes, its shape needs {byte_count}")
    if tensor.dtype not in dtypes:
        wanted = " or ".join(_enum_name(pb.DType, d).removeprefix("DTYPE_").lower() for d in dtypes)
        raise WireError.invalid_tensor(f"{field} is {dtype_name}, expected {wanted}")
    array = np.frombuffer(raw, dtype=element).reshape(shape)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if allow_negative_infinity:
            bad &= array != -np.inf
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise WireError.invalid_tensor(f"{field}[{i}] is {array.reshape(-1)[i]}; values must be finite")
    return array


# MARK: - Handshake


def read_token(path: str) -> bytes:
    """A shared cluster token: the file's bytes, trailing whitespace removed; at least 16 bytes
    (ClusterFile.swift readClusterToken)."""
    with open(path, "rb") as f:
        token = f.read().rstrip(b"\n\r \t")
    if len(token) < MIN_TOKEN_BYTES:
        raise ValueError(f"{path}: the token must be at least {MIN_TOKEN_BYTES} bytes")
    return token


def server_proof(token: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """HMAC-SHA256(token, "pspc-server" || client nonce || server nonce)."""
    return hmac.new(token, SERVER_LABEL + client_nonce + server_nonce, hashlib.sha256).digest()


def client_proof(token: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    """HMAC-SHA256(token, "pspc-client" || server nonce || client nonce)."""
    return hmac.new(token, CLIENT_LABEL + server_nonce + client_nonce, hashlib.sha256).digest()


def _check_role(role: int, field: str) -> None:
    if role not in (pb.ROLE_COORDINATOR, pb.ROLE_WORKER, pb.ROLE_NETWORK):
        raise WireError.unknown_enum(field, role)


@dataclass
class HandshakeAction:
    """What the connection does after a handshake step.

    kind "send": send `frame`, wait for the next one; "established": send `frame` (if any), the
    connection is authenticated; "fail": send `frame` (an ErrorReply, if any, plain), then close.

    `keys`: the session keys, on the step that fixes them: the server's "established" (its Welcome,
    `frame`, goes sealed with k_s2c at seq 0, and every client frame after the Proof is sealed with
    k_c2s), the client's "send" of the Proof (the Proof goes plain; the Welcome that answers it comes
    sealed, and so does every client frame after the Proof) and its "established".
    """

    kind: str
    frame: pb.Frame | None = None
    error: WireError | None = None
    keys: SessionKeys | None = None


class HandshakeServer:
    """The server's side: Hello -> Challenge, Proof -> Welcome. Checks magic, then version, then role,
    then the nonce size; any other frame before the Welcome fails the connection with an error frame."""

    def __init__(
        self,
        token: bytes,
        role: int = pb.ROLE_NETWORK,
        node_id: str = "",
        info: pb.WorkerInfo | None = None,
        accepted_roles: tuple[int, ...] = (pb.ROLE_COORDINATOR,),
        nonce: bytes | None = None,
    ):
        if not token:
            raise ValueError("the cluster token is empty")
        _check_role(role, "server role")
        self._token = token
        self._welcome = pb.Welcome(node_id=node_id, role=role)
        if info is not None:
            self._welcome.info.CopyFrom(info)
        self._accepted = accepted_roles
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self._state = "awaiting_hello"
        self._client_nonce = b""
        self.keys: SessionKeys | None = None
        self.peer_node_id = ""
        self.peer_role = pb.ROLE_UNSPECIFIED

    @property
    def established(self) -> bool:
        return self._state == "established"

    def receive(self, frame: pb.Frame) -> HandshakeAction:
        try:
            return self._receive(frame)
        except WireError as error:
            self._state = "failed"
            return HandshakeAction("fail", error.frame(frame.request_id), error)

    def _receive(self, frame: pb.Frame) -> HandshakeAction:
        name = body_name(frame)
        if self._state == "failed":
            return HandshakeAction("fail")
        if self._state == "established":
            return HandshakeAction("fail", None, WireError.unexpected("no handshake frame after the welcome", name))
        if name == "error":
            self._state = "failed"
            return HandshakeAction("fail", None, WireError.from_reply(frame.error))
        if self._state == "awaiting_hello" and name == "hello":
            hello = frame.hello
            # Magic first: a stranger is told so before anything about versions or roles.
            if hello.magic != MAGIC:
                raise WireError.bad_magic(hello.magic[:16])
            if hello.protocol_version != PROTOCOL_VERSION:
                raise WireError.unsupported_version(hello.protocol_version)
            _check_role(hello.role, "hello.role")
            if hello.role not in self._accepted:
                raise WireError.role_not_accepted(hello.role)
            if len(hello.nonce) != NONCE_SIZE:
                raise WireError.malformed(f"the client nonce has {len(hello.nonce)} bytes, not {NONCE_SIZE}")
            self._client_nonce = hello.nonce
            self.peer_node_id, self.peer_role = hello.node_id, hello.role
            self._state = "awaiting_proof"
            challenge = pb.Challenge(nonce=self._nonce, proof=server_proof(self._token, hello.nonce, self._nonce))
            return HandshakeAction("send", pb.Frame(request_id=0, challenge=challenge))
        if self._state == "awaiting_proof" and name == "proof":
            expected = client_proof(self._token, self._client_nonce, self._nonce)
            if not hmac.compare_digest(frame.proof.proof, expected):
                raise WireError.authentication_failed()
            self._state = "established"
            self.keys = SessionKeys.derive(self._token, self._client_nonce, self._nonce)
            return HandshakeAction("established", pb.Frame(request_id=0, welcome=self._welcome), keys=self.keys)
        expected_name = "hello" if self._state == "awaiting_hello" else "proof"
        raise WireError.unexpected(expected_name, name)


class HandshakeClient:
    """The client's side (a coordinator): `start()` gives the Hello; feed every frame to `receive` until
    it returns "established" (the Welcome arrived) or "fail". The action that sends the Proof carries the
    session keys: from then on the connection reads sealed frames (and a plain error, see FrameDecoder)."""

    def __init__(self, token: bytes, role: int = pb.ROLE_COORDINATOR, node_id: str = "", nonce: bytes | None = None):
        if not token:
            raise ValueError("the cluster token is empty")
        _check_role(role, "client role")
        self._token, self._role, self._node_id = token, role, node_id
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self._state = "initial"
        self.welcome: pb.Welcome | None = None
        self.keys: SessionKeys | None = None

    def start(self) -> pb.Frame:
        if self._state != "initial":
            raise RuntimeError("HandshakeClient.start() called twice")
        self._state = "awaiting_challenge"
        hello = pb.Hello(
            magic=MAGIC, protocol_version=PROTOCOL_VERSION, role=self._role, nonce=self._nonce, node_id=self._node_id
        )
        return pb.Frame(request_id=0, hello=hello)

    def receive(self, frame: pb.Frame) -> HandshakeAction:
        try:
            return self._receive(frame)
        except WireError as error:
            self._state = "failed"
            return HandshakeAction("fail", error.frame(frame.request_id), error)

    def _receive(self, frame: pb.Frame) -> HandshakeAction:
        name = body_name(frame)
        if self._state == "failed":
            return HandshakeAction("fail")
        if self._state == "established":
            return HandshakeAction("fail", None, WireError.unexpected("no handshake frame after the welcome", name))
        if name == "error":
            self._state = "failed"
            return HandshakeAction("fail", None, WireError.from_reply(frame.error))
        if self._state == "awaiting_challenge" and name == "challenge":
            sn = frame.challenge.nonce
            if len(sn) != NONCE_SIZE:
                raise WireError.malformed(f"the server nonce has {len(sn)} bytes, not {NONCE_SIZE}")
            if not hmac.compare_digest(frame.challenge.proof, server_proof(self._token, self._nonce, sn)):
                raise WireError.authentication_failed()
            self._state = "awaiting_welcome"
            self.keys = SessionKeys.derive(self._token, self._nonce, sn)
            proof = pb.Proof(proof=client_proof(self._token, self._nonce, sn))
            return HandshakeAction("send", pb.Frame(request_id=0, proof=proof), keys=self.keys)
        if self._state == "awaiting_welcome" and name == "welcome":
            _check_role(frame.welcome.role, "welcome.role")
            self._state = "established"
            self.welcome = frame.welcome
            return HandshakeAction("established", keys=self.keys)
        expected = {"initial": "nothing before the client's hello", "awaiting_challenge": "challenge"}.get(
            self._state, "welcome"
        )
        raise WireError.unexpected(expected, name)
