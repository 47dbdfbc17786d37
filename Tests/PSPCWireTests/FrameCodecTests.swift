import NIOCore
import PSPCWire
import XCTest

final class FrameCodecTests: XCTestCase {
    private func sampleFrames(seed: UInt64 = 1) -> [Pspc_V1_Frame] {
        var rng = SplitMix64(seed: seed)
        return WireTestSupport.frames(rng: &rng)
    }

    private func encodeAll(_ frames: [Pspc_V1_Frame]) throws -> [UInt8] {
        try frames.flatMap { try FrameCodec.encodeFrame($0) }
    }

    /// Feeds `bytes` through a fresh decoder in chunks of the given sizes (cycled), as a channel would,
    /// then signals EOF; returns every frame produced.
    private func decodeInChunks(_ bytes: [UInt8], chunkSize: (inout SplitMix64) -> Int, seed: UInt64) throws
        -> [Pspc_V1_Frame]
    {
        var rng = SplitMix64(seed: seed)
        let processor = NIOSingleStepByteToMessageProcessor(FrameDecoder())
        var frames: [Pspc_V1_Frame] = []
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + chunkSize(&rng))
            try processor.process(buffer: ByteBuffer(bytes: bytes[start..<end])) { frames.append($0) }
            start = end
        }
        try processor.finishProcessing(seenEOF: true) { frames.append($0) }
        return frames
    }

    func testFramesRoundTripInOneBuffer() throws {
        let frames = sampleFrames()
        let decoded = try FrameCodec.decodeFrames(try encodeAll(frames))
        XCTAssertEqual(decoded.frames, frames)
        XCTAssertEqual(decoded.pendingBytes, 0)
    }

    func testEncodedLayoutIsBigEndianLengthThenFrame() throws {
        var frame = Pspc_V1_Frame()
        frame.requestID = 300
        frame.body = .shutdown(Pspc_V1_Shutdown())
        let payload: [UInt8] = try frame.serializedBytes()
        let bytes = try FrameCodec.encodeFrame(frame)
        XCTAssertEqual(Array(bytes.prefix(4)), [0, 0, 0, UInt8(payload.count)])
        XCTAssertEqual(Array(bytes.dropFirst(4)), payload)
    }

    /// Every frame fed one byte at a time comes back whole, as with swift-nio's ByteToMessageDecoderVerifier.
    func testOneByteAtATime() throws {
        let frames = sampleFrames()
        XCTAssertEqual(try decodeInChunks(try encodeAll(frames), chunkSize: { _ in 1 }, seed: 0), frames)
    }

    func testRandomChunkSizes() throws {
        let frames = sampleFrames(seed: 2)
        let bytes = try encodeAll(frames)
        for seed in 0..<20 as Range<UInt64> {
            let decoded = try decodeInChunks(bytes, chunkSize: { Int.random(in: 1...300, using: &$0) }, seed: seed)
            XCTAssertEqual(decoded, frames, "seed \(seed)")
        }
    }

    func testIncompleteInputNeedsMoreAndConsumesNothing() throws {
        let bytes = try FrameCodec.encodeFrame(sampleFrames()[5])
        var decoder = FrameDecoder()
        for cut in [0, 1, 3, 4, bytes.count - 1] {
            var buffer = ByteBuffer(bytes: bytes.prefix(cut))
            XCTAssertNil(try decoder.decode(buffer: &buffer))
            XCTAssertEqual(buffer.readableBytes, cut, "cut at \(cut)")
            XCTAssertNil(try decoder.decodeLast(buffer: &buffer, seenEOF: false))
        }
        var empty = ByteBuffer()
        XCTAssertNil(try decoder.decodeLast(buffer: &empty, seenEOF: true))
    }

    func testConnectionClosedMidFrameIsAnError() throws {
        let bytes = try FrameCodec.encodeFrame(sampleFrames()[5])
        var decoder = FrameDecoder()
        var buffer = ByteBuffer(bytes: bytes.dropLast())
        assertWireError(try decoder.decodeLast(buffer: &buffer, seenEOF: true)) {
            if case .malformedFrame = $0 { return true } else { return false }
        }
    }

    /// The length alone is enough to refuse: the decoder throws on the 4-byte prefix, before the payload
    /// arrives and without allocating for it.
    func testOversizedLengthRejectedBeforeAllocation() throws {
        var decoder = FrameDecoder()
        var buffer = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF])
        let error = assertWireError(try decoder.decode(buffer: &buffer))
        XCTAssertEqual(error, .frameTooLarge(length: Int(UInt32.max), limit: FrameCodec.defaultMaxFrameSize))
        XCTAssertEqual(buffer.readableBytes, 4, "nothing consumed")

        var justOver = ByteBuffer()
        justOver.writeInteger(UInt32(FrameCodec.defaultMaxFrameSize + 1))
        XCTAssertEqual(
            assertWireError(try decoder.decode(buffer: &justOver)),
            .frameTooLarge(length: FrameCodec.defaultMaxFrameSize + 1, limit: FrameCodec.defaultMaxFrameSize))
    }

    func testConfigurableLimitIsInclusive() throws {
        var frame = Pspc_V1_Frame()
        frame.body = .error(Pspc_V1_ErrorReply())
        frame.body = .error(WireError.malformedFrame(String(repeating: "x", count: 100)).reply)
        let bytes = try FrameCodec.encodeFrame(frame)
        let length = bytes.count - 4
        XCTAssertEqual(try FrameCodec.decodeFrames(bytes, maxFrameSize: length).frames, [frame])
        XCTAssertEqual(
            assertWireError(try FrameCodec.decodeFrames(bytes, maxFrameSize: length - 1)),
            .frameTooLarge(length: length, limit: length - 1))
        XCTAssertEqual(
            assertWireError(try FrameCodec.encodeFrame(frame, maxFrameSize: length - 1)),
            .frameTooLarge(length: length, limit: length - 1))
    }

    func testGarbageProtobufRejected() throws {
        // A field header with wire type 7 (invalid), and a length-delimited field running past the end.
        for payload: [UInt8] in [
            [0x0F, 0x01, 0x02], [0x52, 0x7F, 0x01], [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        ] {
            let bytes = [0, 0, 0, UInt8(payload.count)] + payload
            assertWireError(try FrameCodec.decodeFrames(bytes), "payload \(payload)") {
                if case .malformedFrame = $0 { return true } else { return false }
            }
        }
    }

    func testEmptyFrameDecodesAndHasNoBody() throws {
        let decoded = try FrameCodec.decodeFrames([0, 0, 0, 0])
        XCTAssertEqual(decoded.frames, [Pspc_V1_Frame()])
        XCTAssertEqual(decoded.frames[0].bodyName, "nothing")
        assertWireError(try decoded.frames[0].requireBody()) {
            if case .unknownOperation = $0 { return true } else { return false }
        }
    }

    /// A body from a newer protocol (field 99) still frames; the receiver sees an unknown operation.
    func testUnknownBodyFromNewerPeerIsAnUnknownOperation() throws {
        let payload: [UInt8] = [0x08, 0x05, 0x9A, 0x06, 0x00]  // request_id = 5, field 99 (bytes) empty
        let frames = try FrameCodec.decodeFrames([0, 0, 0, UInt8(payload.count)] + payload).frames
        XCTAssertEqual(frames.count, 1)
        XCTAssertEqual(frames[0].requestID, 5)
        let error = assertWireError(try frames[0].requireBody())
        XCTAssertEqual(error?.code, .unknownOperation)
        XCTAssertTrue(error?.description.contains("does not know") ?? false)
    }

    func testEncoderWritesIntoABuffer() throws {
        let frames = sampleFrames()
        var buffer = ByteBuffer()
        let encoder = FrameEncoder()
        for frame in frames { try encoder.encode(data: frame, out: &buffer) }
        XCTAssertEqual(Array(buffer.readableBytesView), try encodeAll(frames))
    }
}
