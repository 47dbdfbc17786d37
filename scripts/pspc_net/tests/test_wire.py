"""Tests of the Python side of the wire protocol (pspc_net.wire): frames, tensors, handshake; no sockets."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct

import numpy as np
import pytest
import zstandard

from pspc_net import wire
from pspc_net.proto import pspc_pb2 as pb
from pspc_net.wire import WireError

TOKEN = b"0123456789abcdef-test-token"


def sample_frame(rid: int = 7) -> pb.Frame:
    z = wire.tensor_from_array(np.arange(6, dtype=np.float64).reshape(1, 1, 2, 3))
    t = wire.tensor_from_array(np.array([0.5]))
    return pb.Frame(request_id=rid, denoise_request=pb.DenoiseRequest(z=z, t=t))


# MARK: frames


def test_frame_is_big_endian_length_then_protobuf():
    frame = pb.Frame(request_id=1, health_request=pb.HealthRequest())
    data = wire.encode_frame(frame)
    body = frame.SerializeToString()
    assert data == struct.pack(">I", len(body)) + body
    assert data[:4] == b"\x00\x00\x00" + bytes([len(body)])


def test_decoder_fed_one_byte_at_a_time():
    frames = [sample_frame(i) for i in range(3)] + [pb.Frame(request_id=9, health_request=pb.HealthRequest())]
    stream = b"".join(wire.encode_frame(f) for f in frames)
    decoder = wire.FrameDecoder()
    out = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        out.extend(decoder.frames())
    assert out == frames
    assert decoder.pending_bytes == 0


def test_decoder_refuses_a_large_length_from_its_header_alone():
    decoder = wire.FrameDecoder(max_frame_size=100)
    decoder.feed(struct.pack(">I", 101))
    with pytest.raises(WireError) as e:
        decoder.next_frame()
    assert e.value.code == pb.ERROR_CODE_FRAME_TOO_LARGE
    ok = wire.FrameDecoder(max_frame_size=100)
    ok.feed(struct.pack(">I", 100))
    assert ok.next_frame() is None  # at the limit: waits for the body


def test_encoder_refuses_a_frame_above_the_limit():
    with pytest.raises(WireError) as e:
        wire.encode_frame(sample_frame(), max_frame_size=10)
    assert e.value.code == pb.ERROR_CODE_FRAME_TOO_LARGE


def test_malformed_frame():
    decoder = wire.FrameDecoder()
    decoder.feed(struct.pack(">I", 5) + b"\xff\xff\xff\xff\xff")
    with pytest.raises(WireError) as e:
        decoder.next_frame()
    assert e.value.code == pb.ERROR_CODE_MALFORMED_FRAME


def test_decoder_fuzz_raises_only_wire_errors():
    rng = random.Random(0)
    good = wire.encode_frame(sample_frame())
    for _ in range(2000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        decoder = wire.FrameDecoder(max_frame_size=4096)
        decoder.feed(bytes(data[: rng.randint(0, len(data))]))
        try:
            decoder.frames()
        except WireError as e:
            assert e.code in (pb.ERROR_CODE_FRAME_TOO_LARGE, pb.ERROR_CODE_MALFORMED_FRAME)


def test_require_body():
    assert wire.require_body(sample_frame()) == "denoise_request"
    with pytest.raises(WireError) as e:
        wire.require_body(pb.Frame(request_id=3))
    assert e.value.code == pb.ERROR_CODE_UNKNOWN_OPERATION and "no body" in e.value.message
    newer = pb.Frame()
    newer.ParseFromString(b"\x08\x03" + b"\xa2\x06\x00")  # field 100, an empty message: a newer peer's op
    with pytest.raises(WireError) as e:
        wire.require_body(newer)
    assert e.value.code == pb.ERROR_CODE_UNKNOWN_OPERATION and "does not know" in e.value.message


# MARK: tensors


@pytest.mark.parametrize("compression", ["auto", "none", "zstd"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8])
def test_tensor_round_trip(dtype, compression):
    rng = np.random.default_rng(1)
    for shape in [(0, 1, 2, 2), (3,), (2, 3, 5, 7), (40, 40)]:
        if dtype == np.uint8:
            a = rng.integers(0, 256, shape).astype(np.uint8)
        else:
            a = (rng.standard_normal(shape) * 1e3).astype(dtype)
        tensor = wire.tensor_from_array(a, compression)
        assert list(tensor.shape) == list(shape)
        assert tensor.raw_size == a.nbytes
        back = wire.array_from_tensor(tensor, "x", dtypes=(pb.DTYPE_FLOAT64, pb.DTYPE_FLOAT32, pb.DTYPE_UINT8))
        assert back.dtype == a.dtype
        np.testing.assert_array_equal(back, a)  # bit for bit


def test_tensor_bytes_are_little_endian_row_major():
    a = np.array([[1.0, 2.0], [3.0, -0.5]])
    tensor = wire.tensor_from_array(a, "none")
    assert tensor.data == struct.pack("<4d", 1.0, 2.0, 3.0, -0.5)
    assert tensor.dtype == pb.DTYPE_FLOAT64 and tensor.compression == pb.COMPRESSION_NONE


def test_automatic_compression_follows_threshold_and_saving():
    assert wire.tensor_from_array(np.zeros(100)).compression == pb.COMPRESSION_NONE  # 800 bytes < 4096
    assert wire.tensor_from_array(np.zeros(1000)).compression == pb.COMPRESSION_ZSTD
    noise = np.random.default_rng(0).standard_normal(1000)  # random float64 barely compresses
    assert wire.tensor_from_array(noise).compression == pb.COMPRESSION_NONE


def test_zstd_content_size_matches_the_reference_library():
    for n in [0, 1, 255, 256, 300, 65535, 65791, 70000, 1 << 20]:
        data = zstandard.ZstdCompressor(level=3).compress(b"\x01" * n)
        assert wire.zstd_content_size(data) == zstandard.frame_content_size(data) == n
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x01" * 5000)
    assert wire.zstd_content_size(no_size) is None
    assert wire.zstd_content_size(b"not zstd at all") is None


def bad(tensor: pb.Tensor, **changes) -> pb.Tensor:
    t = pb.Tensor()
    t.CopyFrom(tensor)
    for k, v in changes.items():
        if k == "shape":
            del t.shape[:]
            t.shape.extend(v)
        else:
            setattr(t, k, v)
    return t


GOOD = wire.tensor_from_array(np.ones((2, 1, 3, 3)), "none")
GOOD_ZSTD = wire.tensor_from_array(np.ones((2, 1, 30, 30)), "zstd")
NO_CONTENT_SIZE = zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * 14400)


@pytest.mark.parametrize(
    "tensor, needle",
    [
        (bad(GOOD, dtype=pb.DTYPE_UNSPECIFIED), "dtype holds the unspecified value 0"),
        (bad(GOOD, dtype=9), "dtype holds the unknown value 9"),
        (bad(GOOD, compression=pb.COMPRESSION_UNSPECIFIED), "compression holds the unspecified"),
        (bad(GOOD, compression=5), "compression holds the unknown value 5"),
        (bad(GOOD, shape=[2, -1, 3, 3]), "negative dimension"),
        (bad(GOOD, shape=[2, 1, 3, 4]), "states raw_size 144"),
        (bad(GOOD, raw_size=8), "states raw_size 8"),
        (bad(GOOD, data=GOOD.data[:-1]), "carries 143 bytes"),
        (bad(GOOD, shape=[1 << 20, 1 << 20, 1 << 20], raw_size=0), "exceeds the limit"),
        (bad(GOOD, dtype=pb.DTYPE_UINT8, raw_size=18), "carries 144 bytes, its shape needs 18"),
        (bad(GOOD_ZSTD, data=NO_CONTENT_SIZE), "content size"),
        (bad(GOOD_ZSTD, data=zstandard.ZstdCompressor().compress(b"\0" * 14399)), "content size"),
        (bad(GOOD_ZSTD, data=GOOD_ZSTD.data + GOOD_ZSTD.data), "does not decompress"),
        (bad(GOOD_ZSTD, data=GOOD_ZSTD.data[:12]), "does not decompress"),
        (wire.tensor_from_array(np.array([1.0, np.nan])), "values must be finite"),
        (wire.tensor_from_array(np.array([np.inf], dtype=np.float32)), "values must be finite"),
        (wire.tensor_from_array(np.zeros(3, dtype=np.uint8)), "expected float64 or float32"),
    ],
)
def test_tensor_checks(tensor, needle):
    with pytest.raises(WireError) as e:
        wire.array_from_tensor(tensor, "z")
    assert e.value.code == pb.ERROR_CODE_INVALID_ARGUMENT
    assert needle in e.value.message


def test_tensor_limit():
    with pytest.raises(WireError, match="exceeds the limit of 100 bytes"):
        wire.array_from_tensor(GOOD, "z", limits=wire.TensorLimits(max_tensor_bytes=100))


# MARK: handshake


def test_proofs_are_hmac_sha256_over_label_and_nonces():
    cn, sn = bytes(range(32)), bytes(range(32, 64))
    assert wire.server_proof(TOKEN, cn, sn) == hmac.new(TOKEN, b"pspc-server" + cn + sn, hashlib.sha256).digest()
    assert wire.client_proof(TOKEN, cn, sn) == hmac.new(TOKEN, b"pspc-client" + sn + cn, hashlib.sha256).digest()


def run_handshake(client_token: bytes, server_token: bytes):
    server = wire.HandshakeServer(server_token, node_id="net", info=pb.WorkerInfo(threads=3))
    client = wire.HandshakeClient(client_token, node_id="coord")
    hello = client.start()
    assert hello.hello.magic == b"PSPC" and hello.hello.protocol_version == 2
    assert hello.hello.role == pb.ROLE_COORDINATOR and len(hello.hello.nonce) == 32
    challenge = server.receive(hello)
    assert challenge.kind == "send"
    proof = client.receive(challenge.frame)
    return server, client, proof


def test_handshake_succeeds_with_the_same_token():
    server, client, proof = run_handshake(TOKEN, TOKEN)
    assert proof.kind == "send"
    welcome = server.receive(proof.frame)
    assert welcome.kind == "established" and server.established
    assert welcome.frame.welcome.role == pb.ROLE_NETWORK and welcome.frame.welcome.node_id == "net"
    assert welcome.frame.welcome.info.threads == 3
    assert client.receive(welcome.frame).kind == "established"
    assert server.peer_node_id == "coord"
    after = server.receive(sample_frame())
    assert after.kind == "fail" and after.frame is None


def test_client_refuses_a_server_without_the_token():
    _, _, proof = run_handshake(TOKEN, b"another-token-of-16-bytes")
    assert proof.kind == "fail" and proof.error.code == pb.ERROR_CODE_AUTHENTICATION_FAILED


def test_server_refuses_a_proof_made_with_another_token():
    server = wire.HandshakeServer(TOKEN)
    cn = b"\x01" * 32
    challenge = server.receive(pb.Frame(hello=pb.Hello(magic=b"PSPC", protocol_version=2, role=1, nonce=cn)))
    sn = challenge.frame.challenge.nonce
    forged = wire.client_proof(b"wrong-token-wrong-token", cn, sn)
    result = server.receive(pb.Frame(proof=pb.Proof(proof=forged)))
    assert result.kind == "fail" and result.frame.error.code == pb.ERROR_CODE_AUTHENTICATION_FAILED
    # A replay of the server's own proof is no client proof either (labels and order differ).
    server2 = wire.HandshakeServer(TOKEN)
    challenge = server2.receive(pb.Frame(hello=pb.Hello(magic=b"PSPC", protocol_version=2, role=1, nonce=cn)))
    reflected = server2.receive(pb.Frame(proof=pb.Proof(proof=challenge.frame.challenge.proof)))
    assert reflected.kind == "fail"


@pytest.mark.parametrize(
    "hello, code",
    [
        (dict(magic=b"PSPX", protocol_version=1, role=0), pb.ERROR_CODE_BAD_MAGIC),  # magic first
        (dict(magic=b"", protocol_version=2, role=1), pb.ERROR_CODE_BAD_MAGIC),
        (dict(magic=b"PSPC", protocol_version=1, role=0), pb.ERROR_CODE_UNSUPPORTED_VERSION),  # then version
        (dict(magic=b"PSPC", protocol_version=2, role=0), pb.ERROR_CODE_INVALID_ARGUMENT),  # then role
        (dict(magic=b"PSPC", protocol_version=2, role=9), pb.ERROR_CODE_INVALID_ARGUMENT),
        (dict(magic=b"PSPC", protocol_version=2, role=pb.ROLE_WORKER), pb.ERROR_CODE_AUTHENTICATION_FAILED),
        (dict(magic=b"PSPC", protocol_version=2, role=1, nonce=b"short"), pb.ERROR_CODE_MALFORMED_FRAME),
    ],
)
def test_server_checks_magic_then_version_then_role(hello, code):
    hello = {"nonce": b"\0" * 32, **hello}
    result = wire.HandshakeServer(TOKEN).receive(pb.Frame(request_id=4, hello=pb.Hello(**hello)))
    assert result.kind == "fail"
    assert result.frame.request_id == 4 and result.frame.error.code == code


def test_nothing_but_the_handshake_before_the_welcome():
    result = wire.HandshakeServer(TOKEN).receive(sample_frame(rid=5))
    assert result.kind == "fail"
    assert result.frame.error.code == pb.ERROR_CODE_UNEXPECTED_MESSAGE and result.frame.request_id == 5
    assert "expected hello, got denoise_request" in result.frame.error.message
    server = wire.HandshakeServer(TOKEN)
    server.receive(pb.Frame(hello=pb.Hello(magic=b"PSPC", protocol_version=2, role=1, nonce=b"\0" * 32)))
    result = server.receive(pb.Frame(hello=pb.Hello(magic=b"PSPC", protocol_version=2, role=1, nonce=b"\0" * 32)))
    assert result.frame.error.code == pb.ERROR_CODE_UNEXPECTED_MESSAGE
    assert server.receive(pb.Frame(proof=pb.Proof())).kind == "fail"  # failed stays failed


def test_read_token(tmp_path):
    path = tmp_path / "token"
    path.write_bytes(b"0123456789abcdef \t\r\n")
    assert wire.read_token(str(path)) == b"0123456789abcdef"
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        wire.read_token(str(path))


# MARK: version 2: session integrity

VECTOR_TOKEN = b"0123456789abcdef0123456789abcdef"
VECTOR_CN, VECTOR_SN = bytes(range(32)), bytes(range(32, 64))


def test_session_key_and_tag_vectors_shared_with_swift():
    keys = wire.SessionKeys.derive(VECTOR_TOKEN, VECTOR_CN, VECTOR_SN)
    assert keys.client_to_server.hex() == "8ac57875a8a5a906f2a883c43cc3edef455af341bc32cd5d27d8a859e6c120a5"
    assert keys.server_to_client.hex() == "925cb99b1a5c4b2285338a9565891bac89380a18fb48e28882f25cac6445e5aa"
    payload = bytes.fromhex("0807")
    assert pb.Frame(request_id=7).SerializeToString() == payload
    sealer = wire.FrameSealer(keys.client_to_server)
    t0 = "87deabe44c58252d5fb6fdcc6cfc79f08d2e3ccf9fabfb5869946dad0f268d8a"
    t1 = "7b7d18042f73b64edf5dd20dd422e29830bfce14286fe4c2099ca3e54c539f1f"
    assert sealer.seal(payload) == payload + bytes.fromhex(t0)
    sealed = wire.encode_frame(pb.Frame(request_id=7), sealer=sealer)
    assert sealed == struct.pack(">I", 34) + payload + bytes.fromhex(t1)
    decoder = wire.FrameDecoder(opener=wire.FrameOpener(keys.client_to_server))
    header = struct.pack(">I", 34)
    decoder.feed(header + payload + bytes.fromhex(t0) + header + payload + bytes.fromhex(t1))
    assert decoder.frames() == [pb.Frame(request_id=7)] * 2


def test_handshake_returns_the_same_session_keys_on_both_sides():
    server, client, proof = run_handshake(TOKEN, TOKEN)
    assert proof.keys is not None
    welcome = server.receive(proof.frame)
    assert welcome.keys == proof.keys == client.receive(welcome.frame).keys
    assert welcome.keys.client_to_server != welcome.keys.server_to_client


def sealed_stream(n: int = 3):
    keys = wire.SessionKeys.derive(TOKEN, b"\1" * 32, b"\2" * 32)
    sealer = wire.FrameSealer(keys.client_to_server)
    frames = [wire.encode_frame(sample_frame(i), sealer=sealer) for i in range(n)]
    return keys, frames


def test_a_flipped_bit_anywhere_in_a_sealed_frame_is_refused():
    keys, (data, *_) = sealed_stream(1)
    for bit in range(len(data) * 8):
        bad = bytearray(data)
        bad[bit // 8] ^= 1 << (bit % 8)
        decoder = wire.FrameDecoder(max_frame_size=4096, opener=wire.FrameOpener(keys.client_to_server))
        decoder.feed(bytes(bad))
        try:
            frame = decoder.next_frame()
        except WireError as e:
            assert e.code in (pb.ERROR_CODE_AUTHENTICATION_FAILED, pb.ERROR_CODE_FRAME_TOO_LARGE), e.message
            if bit >= 32:  # payload or tag
                assert e.message == "frame 0 failed its integrity check (bad MAC)"
        else:
            assert bit < 32 and frame is None  # a longer length: still waiting for bytes


def test_replayed_reordered_and_short_sealed_frames_are_refused():
    keys, (f0, f1, f2) = sealed_stream()
    for stream in (f0 + f0, f0 + f2, f1):
        decoder = wire.FrameDecoder(opener=wire.FrameOpener(keys.client_to_server))
        decoder.feed(stream)
        with pytest.raises(WireError, match="failed its integrity check") as e:
            decoder.frames()
        assert e.value.code == pb.ERROR_CODE_AUTHENTICATION_FAILED
    decoder = wire.FrameDecoder(opener=wire.FrameOpener(keys.client_to_server))
    decoder.feed(wire.encode_frame(pb.Frame(request_id=1)))  # plain, 2 bytes < the tag
    with pytest.raises(WireError, match="frame 0 failed"):
        decoder.next_frame()
    # With the other direction's key, nothing verifies.
    decoder = wire.FrameDecoder(opener=wire.FrameOpener(keys.server_to_client))
    decoder.feed(f0)
    with pytest.raises(WireError, match="bad MAC"):
        decoder.next_frame()


def test_plain_error_is_let_through_only_while_awaiting_the_welcome():
    keys, (f0, _, _) = sealed_stream()
    refusal = wire.encode_frame(WireError.authentication_failed().frame())
    decoder = wire.FrameDecoder(opener=wire.FrameOpener(keys.client_to_server))
    decoder.plain_error_allowed = True
    decoder.feed(refusal)
    assert decoder.next_frame().error.code == pb.ERROR_CODE_AUTHENTICATION_FAILED
    decoder = wire.FrameDecoder(opener=wire.FrameOpener(keys.client_to_server))
    decoder.plain_error_allowed = True
    decoder.feed(wire.encode_frame(sample_frame()))  # plain, but no error: a forgery
    with pytest.raises(WireError, match="bad MAC"):
        decoder.next_frame()
    decoder = wire.FrameDecoder(opener=wire.FrameOpener(keys.client_to_server))
    decoder.plain_error_allowed = True
    decoder.feed(f0 + refusal)
    assert decoder.next_frame() == sample_frame(0)
    with pytest.raises(WireError, match="frame 1 failed"):  # after the first sealed frame, no plain error
        decoder.next_frame()


def test_sealed_length_counts_the_tag():
    sealer = wire.FrameSealer(b"k" * 32)
    frame = pb.Frame(request_id=1, health_request=pb.HealthRequest())
    n = len(frame.SerializeToString())
    with pytest.raises(WireError) as e:
        wire.encode_frame(frame, max_frame_size=n + 31, sealer=sealer)
    assert e.value.code == pb.ERROR_CODE_FRAME_TOO_LARGE and sealer.seq == 0  # no sequence number used up
    assert len(wire.encode_frame(frame, max_frame_size=n + 32, sealer=sealer)) == 4 + n + 32


def test_handshake_frame_limit_is_checked_from_the_header():
    decoder = wire.FrameDecoder(wire.HANDSHAKE_MAX_FRAME_SIZE)
    decoder.feed(struct.pack(">I", 65537))
    with pytest.raises(WireError, match="65537 bytes exceeds the limit of 65536") as e:
        decoder.next_frame()
    assert e.value.code == pb.ERROR_CODE_FRAME_TOO_LARGE


def test_zstd_tensors_carry_a_checksum_and_a_corrupt_body_is_refused():
    values = np.repeat(np.random.default_rng(0).standard_normal(300), 8)
    tensor = wire.tensor_from_array(values, "zstd")
    assert tensor.data[4] & 0x04  # Content_Checksum_flag
    np.testing.assert_array_equal(wire.array_from_tensor(tensor, "z"), values)
    refused = []
    for i in range(12, len(tensor.data)):
        corrupt = bad(tensor, data=tensor.data[:i] + bytes([tensor.data[i] ^ 0x10]) + tensor.data[i + 1 :])
        try:
            back = wire.array_from_tensor(corrupt, "z")
        except WireError as e:
            assert e.code == pb.ERROR_CODE_INVALID_ARGUMENT and "does not decompress" in e.message
            refused.append(i)
        else:  # a bit zstd ignores (padding of an entropy table): the values are still the ones sent
            np.testing.assert_array_equal(back, values)
    n = len(tensor.data)
    assert {n - 4, n - 3, n - 2, n - 1} <= set(refused)  # the checksum itself
    assert len(refused) > 0.8 * (n - 12)
