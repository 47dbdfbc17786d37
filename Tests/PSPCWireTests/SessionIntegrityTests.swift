import NIOCore
import XCTest

import PSPCWire

/// Frame MACs of protocol version 2: the vectors the Python side checks too, and every way a sealed frame can
/// be changed on the way.
final class SessionIntegrityTests: XCTestCase {
    let token = Array("0123456789abcdef0123456789abcdef".utf8)
    let cn = Array(UInt8(0)..<32), sn = Array(UInt8(32)..<64)

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    func testVectorsShared_withThePythonSide() {
        let keys = SessionKeys(token: token, clientNonce: cn, serverNonce: sn)
        XCTAssertEqual(Self.hex(keys.clientToServer), "8ac57875a8a5a906f2a883c43cc3edef455af341bc32cd5d27d8a859e6c120a5")
        XCTAssertEqual(Self.hex(keys.serverToClient), "925cb99b1a5c4b2285338a9565891bac89380a18fb48e28882f25cac6445e5aa")
        var sealer = FrameSealer(key: keys.clientToServer)
        let payload: [UInt8] = [0x08, 0x07]  // Frame { request_id: 7 }
        XCTAssertEqual(
            Self.hex(Array(sealer.seal(payload).suffix(32))),
            "87deabe44c58252d5fb6fdcc6cfc79f08d2e3ccf9fabfb5869946dad0f268d8a")
        XCTAssertEqual(
            Self.hex(Array(sealer.seal(payload).suffix(32))),
            "7b7d18042f73b64edf5dd20dd422e29830bfce14286fe4c2099ca3e54c539f1f")
    }

    func testEveryFlippedBitIsRefused() throws {
        let key = SessionKeys(token: token, clientNonce: cn, serverNonce: sn).clientToServer
        var sealer = FrameSealer(key: key)
        let frame = Pspc_V1_Frame(requestID: 9, body: .healthRequest(Pspc_V1_HealthRequest()))
        let sealed = sealer.seal(try frame.serializedBytes())
        for bit in 0..<(sealed.count * 8) {
            var bad = sealed
            bad[bit / 8] ^= 1 << UInt8(bit % 8)
            var opener = FrameOpener(key: key)
            XCTAssertThrowsError(try opener.open(bad), "bit \(bit) flipped was accepted")
        }
        var opener = FrameOpener(key: key)
        XCTAssertEqual(Array(try opener.open(sealed)), try frame.serializedBytes())
    }

    func testReplayReorderAndOtherConnectionAreRefused() throws {
        let keys = SessionKeys(token: token, clientNonce: cn, serverNonce: sn)
        var sealer = FrameSealer(key: keys.clientToServer)
        let a = sealer.seal([1, 2, 3]), b = sealer.seal([4, 5, 6])
        var replay = FrameOpener(key: keys.clientToServer)
        XCTAssertNoThrow(try replay.open(a))
        XCTAssertThrowsError(try replay.open(a)) { error in
            XCTAssertEqual(error as? WireError, .integrityFailed(sequence: 1, reason: "bad MAC"))
        }
        var reorder = FrameOpener(key: keys.clientToServer)
        XCTAssertThrowsError(try reorder.open(b))
        // The other direction's key, and another connection's nonces, do not verify.
        var reflected = FrameOpener(key: keys.serverToClient)
        XCTAssertThrowsError(try reflected.open(a))
        var other = FrameOpener(key: SessionKeys(token: token, clientNonce: sn, serverNonce: cn).clientToServer)
        XCTAssertThrowsError(try other.open(a))
        var short = FrameOpener(key: keys.clientToServer)
        XCTAssertThrowsError(try short.open([1, 2]))
    }

    /// Before the handshake a length prefix above 64 KiB is refused from its 4 bytes; after it, the full limit.
    func testHandshakeFrameLimitThenEstablishedLimit() throws {
        let security = FrameSecurity()
        var decoder = FrameDecoder(security: security)
        var buffer = ByteBufferAllocator().buffer(capacity: 4)
        buffer.writeInteger(UInt32(FrameSecurity.handshakeMaxFrameSize + 1), endianness: .big)
        XCTAssertThrowsError(try decoder.decode(buffer: &buffer)) { error in
            XCTAssertEqual(
                error as? WireError,
                .frameTooLarge(
                    length: FrameSecurity.handshakeMaxFrameSize + 1, limit: FrameSecurity.handshakeMaxFrameSize))
        }
        security.sealInbound(key: Array(repeating: 1, count: 32))
        var later = ByteBufferAllocator().buffer(capacity: 4)
        later.writeInteger(UInt32(FrameSecurity.handshakeMaxFrameSize + 1), endianness: .big)
        XCTAssertNil(try decoder.decode(buffer: &later), "an established connection waits for the rest")
    }

    /// The encoder and decoder of two connected sides agree; a plain frame after the handshake is refused, and
    /// a plain error while waiting for the Welcome is read.
    func testSealedFramesRoundTripThroughTheCodec() throws {
        let keys = SessionKeys(token: token, clientNonce: cn, serverNonce: sn)
        let sender = FrameSecurity(), receiver = FrameSecurity()
        sender.sealOutbound(key: keys.clientToServer)
        receiver.sealInbound(key: keys.clientToServer)
        let encoder = FrameEncoder(security: sender)
        var decoder = FrameDecoder(security: receiver)
        for id in UInt64(1)...3 {
            var buffer = ByteBufferAllocator().buffer(capacity: 64)
            try encoder.encode(data: Pspc_V1_Frame(requestID: id, body: .healthRequest(.init())), out: &buffer)
            XCTAssertEqual(try decoder.decode(buffer: &buffer)?.requestID, id)
        }
        var plain = ByteBufferAllocator().buffer(bytes: try FrameCodec.encodeFrame(.error(.authenticationFailed)))
        XCTAssertThrowsError(try decoder.decode(buffer: &plain))
        receiver.acceptsPlainErrors = true
        var plainAgain = ByteBufferAllocator().buffer(bytes: try FrameCodec.encodeFrame(.error(.authenticationFailed)))
        guard case .error = try decoder.decode(buffer: &plainAgain)?.body else {
            return XCTFail("the plain error was not read")
        }
    }
}
