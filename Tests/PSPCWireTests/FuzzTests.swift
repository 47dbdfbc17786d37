import Foundation
import PSPCCore
import PSPCWire
import XCTest

/// Random and mutated input through the decoder, the handshake server and the conversions: nothing may
/// crash, and every input either yields valid values (which re-encode and decode to the same) or a
/// `WireError`.
final class FuzzTests: XCTestCase {
    private static let iterations = 100_000

    private enum Mutation: CaseIterable {
        case flipBits, truncate, randomLength, randomBytes, insertBytes, deleteBytes, splice, reorderValid,
            overwriteVarint
        case tensorFields, numbers
    }

    private struct Counts {
        var inputs = 0
        var frames = 0
        var decodeErrors = 0
        var conversions = 0
        var conversionErrors = 0
    }

    private var corpus: [Pspc_V1_Frame] = []

    func testRandomAndMutatedFrames() throws {
        var rng = SplitMix64(seed: 0xF022)
        let corpus = WireTestSupport.frames(rng: &rng)
        let payloads: [[UInt8]] = try corpus.map { try $0.serializedBytes() }
        self.corpus = corpus
        let token = Array("fuzz token".utf8)
        var counts = Counts()
        let started = Date()

        for _ in 0..<Self.iterations {
            let stream = mutatedStream(payloads: payloads, rng: &rng)
            counts.inputs += 1
            let frames: [Pspc_V1_Frame]
            do {
                frames = try FrameCodec.decodeFrames(stream, maxFrameSize: 1 << 20).frames
            } catch is WireError {
                counts.decodeErrors += 1
                continue
            } catch {
                return XCTFail("decoder threw a non-WireError: \(error)")
            }
            var server = try HandshakeServer(token: token, using: &rng)
            for frame in frames {
                counts.frames += 1
                // The handshake server never crashes; anything other than a good Hello fails it.
                let action = server.receive(frame)
                if case .established = action { return XCTFail("established without a proof: \(frame)") }
                if case .send = action, frame.bodyName != "hello" { return XCTFail("answered \(frame.bodyName)") }
                try convert(frame, counts: &counts)
            }
        }
        let elapsed = Date().timeIntervalSince(started)
        print(
            "fuzz: \(counts.inputs) inputs, \(counts.frames) frames decoded, \(counts.decodeErrors) rejected by the decoder, "
                + "\(counts.conversions) conversions, \(counts.conversionErrors) rejected; \(String(format: "%.1f", elapsed)) s"
        )
        XCTAssertGreaterThanOrEqual(counts.inputs, 100_000)
        XCTAssertGreaterThan(counts.frames, 10_000, "mutations should leave many frames parseable")
        XCTAssertGreaterThan(counts.decodeErrors, 1_000)
        XCTAssertGreaterThan(counts.conversionErrors, 1_000)
    }

    /// Converts what a frame carries; a success must survive a second round trip unchanged.
    private func convert(_ frame: Pspc_V1_Frame, counts: inout Counts) throws {
        do {
            switch frame.body {
            case .partialRequest(let message)?:
                counts.conversions += 1
                let request = try PartialRequest(wire: message)
                let again = try PartialRequest(wire: Pspc_V1_PartialRequest(request))
                if !WireTestSupport.same(request, again) { XCTFail("request did not round-trip: \(message)") }
            case .partialResponse(let message)?:
                counts.conversions += 1
                let response = try PartialResponse(wire: message)
                let again = try PartialResponse(wire: Pspc_V1_PartialResponse(response))
                if !WireTestSupport.same(response, again) { XCTFail("response did not round-trip: \(message)") }
            case .denoiseRequest(let message)?:
                counts.conversions += 1
                _ = try message.decoded()
            case .denoiseResponse(let message)?:
                counts.conversions += 1
                _ = try message.decoded()
            case .heatmapRequest(let message)?:
                counts.conversions += 1
                _ = try message.images.uint8Values(field: "images")
            case .heatmapResponse(let message)?:
                counts.conversions += 1
                _ = try message.maps.doubleValues(field: "maps")
            case .welcome(let message)?:
                counts.conversions += 1
                _ = try ImageShape(wire: message.info.shape)
            case .error(let reply)?:
                _ = WireError(reply: reply).description
            case nil:
                counts.conversions += 1
                _ = try frame.requireBody()
            default:
                break
            }
        } catch is WireError {
            counts.conversionErrors += 1
        } catch {
            XCTFail("conversion threw a non-WireError: \(error)")
        }
    }

    /// One input stream: a few frames, one of them (or the whole stream) damaged.
    private func mutatedStream(payloads: [[UInt8]], rng: inout SplitMix64) -> [UInt8] {
        func framed(_ payload: [UInt8]) -> [UInt8] {
            let n = UInt32(payload.count)
            return [
                UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8),
                UInt8(truncatingIfNeeded: n),
            ] + payload
        }
        var payload = payloads.randomElement(using: &rng)!
        switch Mutation.allCases.randomElement(using: &rng)! {
        case .flipBits:
            guard !payload.isEmpty else { break }
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                payload[Int.random(in: 0..<payload.count, using: &rng)] ^= 1 << UInt8.random(in: 0..<8, using: &rng)
            }
        case .truncate:
            payload = Array(payload.prefix(Int.random(in: 0...payload.count, using: &rng)))
        case .randomLength:
            // A prefix that disagrees with the payload: short, long, or absurd.
            var bytes = framed(payload)
            let length = UInt32.random(in: 0...UInt32(payload.count + 64), using: &rng)
            let absurd = rng.next() & 7 == 0
            let value = absurd ? UInt32.random(in: 0...UInt32.max, using: &rng) : length
            bytes.replaceSubrange(
                0..<4,
                with: [
                    UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16),
                    UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value),
                ])
            return bytes
        case .randomBytes:
            payload = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        case .insertBytes:
            let at = Int.random(in: 0...payload.count, using: &rng)
            payload.insert(
                contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng)
                }, at: at)
        case .deleteBytes:
            guard !payload.isEmpty else { break }
            let at = Int.random(in: 0..<payload.count, using: &rng)
            payload.removeSubrange(at..<min(payload.count, at + Int.random(in: 1...8, using: &rng)))
        case .splice:
            let other = payloads.randomElement(using: &rng)!
            payload =
                Array(payload.prefix(Int.random(in: 0...payload.count, using: &rng)))
                + other.suffix(Int.random(in: 0...other.count, using: &rng))
        case .reorderValid:
            // Valid frames, in an order no handshake expects.
            return (0..<Int.random(in: 2...5, using: &rng)).flatMap { _ in framed(payloads.randomElement(using: &rng)!)
            }
        case .overwriteVarint:
            // Large varints where lengths, counts and enums live.
            guard !payload.isEmpty else { break }
            let at = Int.random(in: 0..<payload.count, using: &rng)
            let varint: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0x0F].prefix(Int.random(in: 1...5, using: &rng)) + [0x01]
            payload.replaceSubrange(at..<min(payload.count, at + varint.count), with: varint)
        case .tensorFields:
            var frame = corpus.randomElement(using: &rng)!
            let pick = rng.next()
            Self.editTensors(in: &frame, pick: pick) { Self.mutate(&$0, rng: &rng) }
            payload = (try? frame.serializedBytes()) ?? payload
        case .numbers:
            var frame = corpus.randomElement(using: &rng)!
            Self.mutateNumbers(in: &frame, rng: &rng)
            payload = (try? frame.serializedBytes()) ?? payload
        }
        var stream = framed(payload)
        if rng.next() & 3 == 0 { stream += framed(payloads.randomElement(using: &rng)!) }
        return stream
    }

    // MARK: - Structure-aware mutations

    /// Damages one field of a tensor the way a buggy or hostile peer might.
    private static func mutate(_ tensor: inout Pspc_V1_Tensor, rng: inout SplitMix64) {
        let small: [Int64] = [-1, 0, 1, 2, 3, 5, 12, 40, Int64.max, Int64.min, 1 << 32]
        switch Int.random(in: 0..<8, using: &rng) {
        case 0:
            if tensor.shape.isEmpty { tensor.shape = [small.randomElement(using: &rng)!] }
            tensor.shape[Int.random(in: 0..<tensor.shape.count, using: &rng)] = small.randomElement(using: &rng)!
        case 1: tensor.shape.append(small.randomElement(using: &rng)!)
        case 2: if !tensor.shape.isEmpty { tensor.shape.removeLast() }
        case 3:
            tensor.rawSize = small.randomElement(using: &rng)! &+ tensor.rawSize * Int64.random(in: 0...2, using: &rng)
        case 4: tensor.dtype = Pspc_V1_DType(rawValue: Int.random(in: 0...5, using: &rng))!
        case 5: tensor.compression = Pspc_V1_Compression(rawValue: Int.random(in: 0...3, using: &rng))!
        case 6: tensor.data = tensor.data.prefix(Int.random(in: 0...tensor.data.count, using: &rng))
        default:
            // Non-finite values where finite ones belong.
            guard tensor.dtype == .float64, tensor.compression == .none, tensor.data.count >= 8 else { return }
            var values = (try? tensor.doubleValues(field: "x")) ?? []
            guard !values.isEmpty else { return }
            values[Int.random(in: 0..<values.count, using: &rng)] = [.nan, .infinity, -.infinity].randomElement(
                using: &rng)!
            tensor.data = values.withUnsafeBytes { Data($0) }
        }
    }

    /// Applies `edit` to one tensor of the frame, chosen by `pick`.
    private static func editTensors(in frame: inout Pspc_V1_Frame, pick: UInt64, _ edit: (inout Pspc_V1_Tensor) -> Void)
    {
        switch frame.body {
        case .partialRequest(var message)?:
            switch message.op {
            case .empirical(var op)?: edit(&op.queries); message.op = .empirical(op)
            case .cropNormalizers(var op)?: edit(&op.queries); message.op = .cropNormalizers(op)
            case .cropComposite(var op)?:
                if pick & 1 == 0 { edit(&op.queries) } else { edit(&op.logZ) }
                message.op = .cropComposite(op)
            default: break
            }
            frame.body = .partialRequest(message)
        case .partialResponse(var message)?:
            switch message.result {
            case .softmax(var p)?:
                switch pick % 3 {
                case 0: edit(&p.m)
                case 1: edit(&p.s)
                default: edit(&p.v)
                }
                message.result = .softmax(p)
            case .sums(var t)?: edit(&t); message.result = .sums(t)
            case .moments(var m)?:
                if pick & 1 == 0 { edit(&m.sum) } else { edit(&m.outer) }
                message.result = .moments(m)
            default: break
            }
            frame.body = .partialResponse(message)
        case .denoiseRequest(var message)?:
            if pick & 1 == 0 { edit(&message.z) } else { edit(&message.t) }
            frame.body = .denoiseRequest(message)
        default:
            break
        }
    }

    /// Out-of-range scalars: t, patch sizes, mask rows, counts, value lengths, versions and roles.
    private static func mutateNumbers(in frame: inout Pspc_V1_Frame, rng: inout SplitMix64) {
        let doubles: [Double] = [0, -1, .nan, .infinity, -.infinity, .leastNonzeroMagnitude, 1e308]
        switch frame.body {
        case .hello(var hello)?:
            switch Int.random(in: 0..<4, using: &rng) {
            case 0: hello.protocolVersion = UInt32.random(in: 0...3, using: &rng)
            case 1: hello.role = Pspc_V1_Role(rawValue: Int.random(in: 0...5, using: &rng))!
            case 2: hello.magic = hello.magic.prefix(Int.random(in: 0...4, using: &rng))
            default: hello.nonce = hello.nonce.prefix(Int.random(in: 0...32, using: &rng))
            }
            frame.body = .hello(hello)
        case .partialRequest(var message)?:
            switch message.op {
            case .empirical(var op)?:
                op.t = doubles.randomElement(using: &rng)!
                message.op = .empirical(op)
            case .cropNormalizers(var op)?:
                mutate(&op.crops, rng: &rng)
                message.op = .cropNormalizers(op)
            case .cropComposite(var op)?:
                if rng.next() & 1 == 0 {
                    op.t = doubles.randomElement(using: &rng)!
                } else {
                    mutate(&op.crops, rng: &rng)
                }
                message.op = .cropComposite(op)
            default: break
            }
            frame.body = .partialRequest(message)
        case .partialResponse(var message)?:
            switch message.result {
            case .softmax(var p)?:
                p.valueLength = UInt32.random(in: 0...6, using: &rng)
                message.result = .softmax(p)
            case .moments(var m)?:
                m.count = Int64.random(in: -2...2, using: &rng)
                message.result = .moments(m)
            default: break
            }
            frame.body = .partialResponse(message)
        default:
            break
        }
    }

    private static func mutate(_ crops: inout Pspc_V1_CropSpec, rng: inout SplitMix64) {
        switch crops.kind {
        case .squarePatchSize?:
            crops.squarePatchSize = UInt32.random(in: 0...7, using: &rng)
        case .masks(var masks)?:
            switch Int.random(in: 0..<5, using: &rng) {
            case 0:
                if !masks.offsets.isEmpty {
                    masks.offsets[Int.random(in: 0..<masks.offsets.count, using: &rng)] = Int64.random(
                        in: -2...12, using: &rng)
                }
            case 1:
                if !masks.pixels.isEmpty {
                    masks.pixels[Int.random(in: 0..<masks.pixels.count, using: &rng)] = Int32.random(
                        in: -2...25, using: &rng)
                }
            case 2:
                if !masks.multiplicity.isEmpty {
                    masks.multiplicity[0] = [-1, .nan, 0, 2.5].randomElement(using: &rng)!
                }
            case 3: masks.pixelCount = UInt64.random(in: 0...40, using: &rng)
            default: masks.multiplicity.append(1)
            }
            crops.masks = masks
        case nil:
            crops.squarePatchSize = 1
        }
    }
}
