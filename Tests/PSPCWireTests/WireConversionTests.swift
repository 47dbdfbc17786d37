import Foundation
import PSPCCore
import PSPCWire
import XCTest

final class WireConversionTests: XCTestCase {
    private let shape = WireTestSupport.shape

    /// Through the message, a frame and its bytes, and back.
    private func roundTrip(_ request: PartialRequest, compression: TensorCompression = .automatic) throws
        -> PartialRequest
    {
        let frame = Pspc_V1_Frame(
            requestID: 7,
            body: .partialRequest(Pspc_V1_PartialRequest(request, shards: [1, 4], compression: compression)))
        let decoded = try FrameCodec.decodeFrames(try FrameCodec.encodeFrame(frame)).frames
        guard decoded.count == 1, case .partialRequest(let message)? = decoded[0].body else {
            throw WireError.malformedFrame("the encoded frame did not decode back to one frame of the same kind")
        }
        XCTAssertEqual(message.shards, [1, 4])
        return try PartialRequest(wire: message)
    }

    private func roundTrip(_ response: PartialResponse, compression: TensorCompression = .automatic) throws
        -> PartialResponse
    {
        let frame = Pspc_V1_Frame(
            requestID: 7, body: .partialResponse(Pspc_V1_PartialResponse(response, compression: compression)))
        let decoded = try FrameCodec.decodeFrames(try FrameCodec.encodeFrame(frame)).frames
        guard decoded.count == 1, case .partialResponse(let message)? = decoded[0].body else {
            throw WireError.malformedFrame("the encoded frame did not decode back to one frame of the same kind")
        }
        return try PartialResponse(wire: message)
    }

    // MARK: - Round trips

    func testEveryRequestRoundTripsBitExactly() throws {
        var rng = SplitMix64(seed: 11)
        let requests = WireTestSupport.requests(rng: &rng)
        XCTAssertEqual(requests.count, 18)
        for (i, request) in requests.enumerated() {
            for compression in [TensorCompression.automatic, .none, .zstd] {
                let back = try roundTrip(request, compression: compression)
                XCTAssertTrue(
                    WireTestSupport.same(request, back),
                    "request \(i) (\(compression)): \(request) came back as \(back)")
                // The overload that checks the training set's shape accepts matching queries.
                _ = try PartialRequest(wire: Pspc_V1_PartialRequest(request), shape: shape)
            }
        }
    }

    func testEveryResponseRoundTripsBitExactly() throws {
        var rng = SplitMix64(seed: 12)
        for (i, response) in WireTestSupport.responses(rng: &rng).enumerated() {
            for compression in [TensorCompression.automatic, .none, .zstd] {
                let back = try roundTrip(response, compression: compression)
                XCTAssertTrue(WireTestSupport.same(response, back), "response \(i) (\(compression))")
            }
        }
    }

    func testMasksRoundTripExactly() throws {
        let masks = WireTestSupport.masks()
        XCTAssertEqual(masks.multiplicity, [2, 1, 1, 1])
        XCTAssertEqual(try MaskSet(wire: Pspc_V1_MaskSetSpec(masks)), masks)
        let empty = MaskSet(masks: [], pixelCount: 20)
        XCTAssertEqual(try MaskSet(wire: Pspc_V1_MaskSetSpec(empty)), empty)
        var weighted = masks
        weighted.multiplicity = [0.5, 1e-300, 3, 0]
        XCTAssertEqual(try CropSet(wire: Pspc_V1_CropSpec(.masks(weighted))), .masks(weighted))
        XCTAssertEqual(try CropSet(wire: Pspc_V1_CropSpec(.square(patchSize: 4))), .square(patchSize: 4))
    }

    func testImageShapeAndDenoiseMessages() throws {
        XCTAssertEqual(try ImageShape(wire: Pspc_V1_ImageShape(shape)), shape)
        assertWireError(try ImageShape(wire: Pspc_V1_ImageShape(ImageShape(channels: 0, height: 4, width: 4))))

        var rng = SplitMix64(seed: 5)
        let q = WireTestSupport.queries(3, rng: &rng)
        let request = try Pspc_V1_DenoiseRequest(queries: q, t: [0.002, 1, 80]).decoded()
        XCTAssertTrue(WireTestSupport.sameBatch(request.queries, q))
        XCTAssertEqual(request.t, [0.002, 1, 80])
        XCTAssertTrue(WireTestSupport.sameBatch(try Pspc_V1_DenoiseResponse(denoised: q).decoded(), q))
        assertWireError(try Pspc_V1_DenoiseRequest(queries: q, t: [1, 2]).decoded()) {
            $0.description.contains("shape")
        }
        assertWireError(try Pspc_V1_DenoiseRequest(queries: q, t: [1, 0, 2]).decoded()) {
            $0 == .invalidArgument("denoise_request.t[1] must be positive and finite, got 0.0")
        }
        assertWireError(try Pspc_V1_DenoiseResponse().decoded()) {
            $0 == .invalidArgument("denoise_response.denoised is missing")
        }
    }

    func testTensorDtypes() throws {
        let floats: [Float] = [0, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude, .infinity, 1.5]
        let f32 = Pspc_V1_Tensor(float32: floats, shape: [2, 3])
        XCTAssertEqual(f32.dtype, .float32)
        XCTAssertEqual(try f32.floatValues(field: "f").map(\.bitPattern), floats.map(\.bitPattern))
        XCTAssertEqual(try f32.doubleValues(field: "f"), floats.map(Double.init), "float32 widens")
        let bytes: [UInt8] = (0..<256).map { UInt8($0) }
        let u8 = Pspc_V1_Tensor(uint8: bytes, shape: [4, 64])
        XCTAssertEqual(try u8.uint8Values(field: "u"), bytes)
        XCTAssertEqual(try u8.checkedShape(field: "u"), [4, 64])
        assertWireError(try u8.doubleValues(field: "u")) {
            $0 == .invalidTensor("u is uint8, expected float64 or float32")
        }
        assertWireError(try f32.uint8Values(field: "f")) { $0 == .invalidTensor("f is float32, expected uint8") }
        // float32 queries are accepted (widened); the network endpoint may send them.
        var rng = SplitMix64(seed: 1)
        let values = (0..<(2 * shape.dimension)).map { _ in Float.random(in: -1...1, using: &rng) }
        let batch = try QueryBatch(wire: Pspc_V1_Tensor(float32: values, shape: [2, 2, 5, 4]))
        XCTAssertEqual(batch.values, values.map(Double.init))
        XCTAssertEqual(batch.shape, shape)
    }

    // MARK: - Compression

    func testCompressionUsedWhenItPaysAndBitExact() throws {
        // Quantised values: compressible, but every bit must survive.
        var rng = SplitMix64(seed: 3)
        let quantised = (0..<4096).map { _ in Double(Int.random(in: 0...255, using: &rng)) / 127.5 - 1 }
        let tensor = Pspc_V1_Tensor(float64: quantised, shape: [4096])
        XCTAssertEqual(tensor.compression, .zstd)
        XCTAssertEqual(tensor.rawSize, 4096 * 8)
        XCTAssertLessThanOrEqual(Double(tensor.data.count), 0.9 * 4096 * 8)
        XCTAssertTrue(WireTestSupport.bitsEqual(try tensor.doubleValues(field: "q"), quantised))

        let zeros = Pspc_V1_Tensor(float64: [Double](repeating: 0, count: 512), shape: [512])  // exactly 4 KiB
        XCTAssertEqual(zeros.compression, .zstd)
        XCTAssertLessThan(zeros.data.count, 100)
        XCTAssertEqual(try zeros.doubleValues(field: "z"), [Double](repeating: 0, count: 512))
    }

    func testCompressionSkippedWhenSmallOrUseless() throws {
        let small = Pspc_V1_Tensor(float64: [Double](repeating: 0, count: 511), shape: [511])  // 4 KiB - 8 bytes
        XCTAssertEqual(small.compression, .none)
        XCTAssertEqual(small.data.count, 511 * 8)
        var rng = SplitMix64(seed: 4)
        let noise = (0..<4096).map { _ in Double(bitPattern: rng.next() >> 2) }
        let random = Pspc_V1_Tensor(float64: noise, shape: [64, 64])
        XCTAssertEqual(random.compression, .none, "random bits do not compress by 10 %")
        XCTAssertTrue(WireTestSupport.bitsEqual(try random.doubleValues(field: "r"), noise))
        XCTAssertEqual(Pspc_V1_Tensor(float64: noise, shape: [4096], compression: .none).compression, .none)
        let forced = Pspc_V1_Tensor(float64: [1, 2, 3], shape: [3], compression: .zstd)
        XCTAssertEqual(forced.compression, .zstd)
        XCTAssertEqual(try forced.doubleValues(field: "f"), [1, 2, 3])
        let empty = Pspc_V1_Tensor(float64: [], shape: [0, 3], compression: .zstd)
        XCTAssertEqual(try empty.doubleValues(field: "e"), [])
        XCTAssertEqual(try empty.checkedShape(field: "e"), [0, 3])
    }

    // MARK: - Rejections

    private func tensor(
        _ values: [Double] = [1, 2, 3, 4, 5, 6], shape: [Int] = [2, 3], _ edit: (inout Pspc_V1_Tensor) -> Void
    )
        -> Pspc_V1_Tensor
    {
        var t = Pspc_V1_Tensor(float64: values, shape: shape, compression: .none)
        edit(&t)
        return t
    }

    func testCorruptTensorsAreRejected() throws {
        let cases: [(String, Pspc_V1_Tensor, WireError)] = [
            ("unspecified dtype", tensor { $0.dtype = .unspecified }, .unknownEnumValue(field: "x.dtype", value: 0)),
            ("unknown dtype", tensor { $0.dtype = .UNRECOGNIZED(9) }, .unknownEnumValue(field: "x.dtype", value: 9)),
            (
                "unspecified compression", tensor { $0.compression = .unspecified },
                .unknownEnumValue(field: "x.compression", value: 0)
            ),
            (
                "unknown compression", tensor { $0.compression = .UNRECOGNIZED(3) },
                .unknownEnumValue(field: "x.compression", value: 3)
            ),
            (
                "negative dimension", tensor { $0.shape = [-2, -3] },
                .invalidTensor("x has a negative dimension -2 (axis 0 of [-2, -3])")
            ),
            (
                "raw size mismatch", tensor { $0.rawSize = 40 },
                .invalidTensor("x states raw_size 40, but shape [2, 3] of float64 takes 48 bytes")
            ),
            (
                "shape product mismatch", tensor { $0.shape = [2, 2] },
                .invalidTensor("x states raw_size 48, but shape [2, 2] of float64 takes 32 bytes")
            ),
            (
                "data shorter than stated", tensor { $0.data = $0.data.dropLast(8) },
                .invalidTensor("x carries 40 bytes, its shape needs 48")
            ),
            (
                "float64 data read as float32", tensor { $0.dtype = .float32 },
                .invalidTensor("x states raw_size 48, but shape [2, 3] of float32 takes 24 bytes")
            ),
            (
                "overflowing shape", tensor { $0.shape = [Int64.max, 2] },
                .invalidTensor("x of shape [\(Int64.max), 2] exceeds the limit of 1073741824 bytes")
            ),
            (
                "huge empty tensor", tensor { $0.shape = [0, 1 << 40, 1 << 40] },
                .invalidTensor("x of shape [0, 1099511627776, 1099511627776] exceeds the limit of 1073741824 bytes")
            ),
        ]
        for (name, t, expected) in cases {
            assertWireError(try t.doubleValues(field: "x"), name) { $0 == expected }
        }
        let limited = WireLimits(maxTensorBytes: 40)
        assertWireError(try tensor { _ in }.doubleValues(field: "x", limits: limited)) {
            $0 == .invalidTensor("x of shape [2, 3] exceeds the limit of 40 bytes")
        }
    }

    func testCorruptCompressedTensorsAreRejected() throws {
        let values = [Double](repeating: 0.25, count: 1000)
        let good = Pspc_V1_Tensor(float64: values, shape: [1000])
        XCTAssertEqual(good.compression, .zstd)
        var flipped = good
        var bytes = [UInt8](flipped.data)
        bytes[bytes.count - 3] ^= 0xFF
        flipped.data = Data(bytes)
        // zstd frames carry no checksum by default: a flipped byte either fails to decode or decodes to
        // other values of the right size, never anything else.
        do {
            let values = try flipped.doubleValues(field: "x")
            XCTAssertEqual(values.count, 1000)
        } catch let error as WireError {
            XCTAssertEqual(error.code, .invalidArgument)
        }
        var notZstd = good
        notZstd.data = Data(repeating: 0, count: 32)
        assertWireError(try notZstd.doubleValues(field: "x")) {
            $0 == .invalidTensor("x is not one zstd frame stating its content size of 8000 bytes")
        }
        // The header says 8000 bytes, the shape another size: refused before decompressing anything.
        var resized = good
        resized.shape = [500]
        resized.rawSize = 4000
        assertWireError(try resized.doubleValues(field: "x")) {
            $0 == .invalidTensor("x is not one zstd frame stating its content size of 4000 bytes")
        }
        var truncated = good
        truncated.data = truncated.data.prefix(truncated.data.count / 2)
        assertWireError(try truncated.doubleValues(field: "x"))
    }

    private func request(_ edit: (inout Pspc_V1_PartialRequest) -> Void, base: PartialRequest? = nil) throws
        -> Pspc_V1_PartialRequest
    {
        var rng = SplitMix64(seed: 8)
        let q = WireTestSupport.queries(2, rng: &rng)
        let crops = CropSet.square(patchSize: 2)
        let logZ = [Double](repeating: -1, count: 2 * crops.cropCount(for: shape))
        var message = Pspc_V1_PartialRequest(base ?? .cropComposite(queries: q, t: 1, crops: crops, logZ: logZ))
        edit(&message)
        return message
    }

    private func composite(_ edit: (inout Pspc_V1_CropCompositeOp) -> Void) throws -> Pspc_V1_PartialRequest {
        try request { message in
            guard case .cropComposite(var op)? = message.op else { return XCTFail() }
            edit(&op)
            message.op = .cropComposite(op)
        }
    }

    private func queriesTensor(_ values: [Double]) -> Pspc_V1_Tensor {
        Pspc_V1_Tensor(float64: values, shape: [1, 2, 5, 4])
    }

    func testInvalidRequestsAreRejected() throws {
        XCTAssertNoThrow(try PartialRequest(wire: try composite { _ in }))
        var nan = [Double](repeating: 0, count: 40)
        nan[17] = .nan
        var inf = nan
        inf[17] = -.infinity
        let cases: [(String, Pspc_V1_PartialRequest, (WireError) -> Bool)] = [
            (
                "no op", try request { $0.op = nil },
                { $0 == .unknownOperation("the partial request names no operation") }
            ),
            (
                "NaN query",
                try composite {
                    $0.queries = self.queriesTensor(nan);
                    $0.logZ = Pspc_V1_Tensor(float64: [Double](repeating: 0, count: 12), shape: [1, 12])
                },
                { $0 == .invalidTensor("crop_composite.queries[17] is nan; values must be finite") }
            ),
            (
                "inf query", try composite { $0.queries = self.queriesTensor(inf) },
                { $0 == .invalidTensor("crop_composite.queries[17] is -inf; values must be finite") }
            ),
            (
                "NaN t", try composite { $0.t = .nan },
                { $0 == .invalidArgument("crop_composite.t must be positive and finite, got nan") }
            ),
            ("inf t", try composite { $0.t = .infinity }, { $0.code == .invalidArgument }),
            ("zero t", try composite { $0.t = 0 }, { $0.code == .invalidArgument }),
            ("negative t", try composite { $0.t = -1 }, { $0.code == .invalidArgument }),
            (
                "missing queries", try composite { $0.clearQueries() },
                { $0 == .invalidArgument("crop_composite.queries is missing") }
            ),
            (
                "missing crops", try composite { $0.clearCrops() },
                { $0 == .invalidArgument("crop_composite.crops is missing") }
            ),
            (
                "missing log Z", try composite { $0.clearLogZ() },
                { $0 == .invalidArgument("crop_composite.log_z is missing") }
            ),
            (
                "empty crop spec", try composite { $0.crops = Pspc_V1_CropSpec() },
                { $0 == .invalidArgument("crop_composite.crops names neither a square patch size nor masks") }
            ),
            ("zero patch", try composite { $0.crops.squarePatchSize = 0 }, { $0.code == .invalidArgument }),
            (
                "patch larger than the image", try composite { $0.crops.squarePatchSize = 5 },
                { $0 == .invalidArgument("crop_composite.crops: patch size 5 is larger than the 5x4 image") }
            ),
            (
                "log Z of the wrong shape",
                try composite { $0.logZ = Pspc_V1_Tensor(float64: [0, 0], shape: [2, 1]) },
                { $0 == .invalidTensor("crop_composite.log_z has shape [2, 1], expected [2, 12]") }
            ),
            (
                "NaN log Z",
                try composite {
                    $0.logZ = Pspc_V1_Tensor(float64: [.nan] + [Double](repeating: 0, count: 23), shape: [2, 12])
                },
                { $0 == .invalidTensor("crop_composite.log_z[0] is nan; log values must be finite or -inf") }
            ),
            (
                "+inf log Z",
                try composite {
                    $0.logZ = Pspc_V1_Tensor(float64: [Double](repeating: .infinity, count: 24), shape: [2, 12])
                },
                { $0.code == .invalidArgument }
            ),
            (
                "queries of rank 3", try composite { $0.queries = Pspc_V1_Tensor(float64: [1, 2], shape: [1, 1, 2]) },
                {
                    $0
                        == .invalidTensor(
                            "crop_composite.queries has shape [1, 1, 2], expected [B, C, H, W] with C, H, W >= 1")
                }
            ),
            (
                "queries with an empty side",
                try composite { $0.queries = Pspc_V1_Tensor(float64: [], shape: [3, 2, 0, 4]) },
                { $0.description.contains("C, H, W >= 1") }
            ),
            (
                "uint8 queries", try composite { $0.queries = Pspc_V1_Tensor(uint8: [1], shape: [1, 1, 1, 1]) },
                { $0 == .invalidTensor("crop_composite.queries is uint8, expected float64 or float32") }
            ),
        ]
        for (name, message, matches) in cases {
            assertWireError(try PartialRequest(wire: message), name, matches: matches)
        }
        assertWireError(
            try PartialRequest(wire: try composite { _ in }, shape: ImageShape(channels: 1, height: 5, width: 4))
        ) {
            $0 == .invalidArgument("the queries are 2x5x4 images, the training set's are 1x5x4")
        }
    }

    func testMomentsRowsAreChecked() throws {
        func moments(start: UInt32, count: UInt32) -> Pspc_V1_PartialRequest {
            var op = Pspc_V1_MomentsOp()
            op.rowStart = start
            op.rowCount = count
            var request = Pspc_V1_PartialRequest()
            request.op = .moments(op)
            return request
        }
        // An empty MomentsOp (what a sender without row blocks writes) asks for every row.
        guard case .moments(let every) = try PartialRequest(wire: moments(start: 0, count: 0), shape: shape),
            case .moments(let last) = try PartialRequest(wire: moments(start: 39, count: 1), shape: shape)
        else { return XCTFail("moments requests decoded as another kind") }
        XCTAssertNil(every)
        XCTAssertEqual(last, 39..<40)
        assertWireError(try PartialRequest(wire: moments(start: 3, count: 0))) {
            $0 == .invalidArgument("moments.row_start is 3 with row_count 0 (every row)")
        }
        assertWireError(try PartialRequest(wire: moments(start: 38, count: 3), shape: shape)) {
            $0 == .invalidArgument("moments rows 38..<41 are outside the 40 rows of 2x5x4 images")
        }
        // Answers: rows must lie inside the D x D outer sum; a message without row_start holds every row.
        var block = Pspc_V1_MomentsMsg(Moments(count: 2, sum: [1, 2, 3], outer: [1, 2, 3, 4, 5, 6], rows: 1..<3))
        XCTAssertEqual(block.rowStart, 1)
        XCTAssertEqual(try Moments(wire: block).rows, 1..<3)
        block.rowStart = 2
        assertWireError(try Moments(wire: block)) {
            $0 == .invalidArgument("moments rows 2..<4 are outside the 3 rows of the outer sum")
        }
        var whole = Pspc_V1_MomentsMsg()
        whole.count = 1
        whole.sum = Pspc_V1_Tensor(float64: [1, 2], shape: [2])
        whole.outer = Pspc_V1_Tensor(float64: [1, 2, 2, 4], shape: [2, 2])
        XCTAssertEqual(try Moments(wire: whole), Moments(count: 1, sum: [1, 2], outer: [1, 2, 2, 4], rows: 0..<2))
    }

    func testMalformedMasksAreRejected() throws {
        let good = Pspc_V1_MaskSetSpec(WireTestSupport.masks())
        func masks(_ edit: (inout Pspc_V1_MaskSetSpec) -> Void) -> Pspc_V1_MaskSetSpec {
            var m = good
            edit(&m)
            return m
        }
        let cases: [(String, Pspc_V1_MaskSetSpec, WireError)] = [
            (
                "offsets count", masks { $0.offsets.removeLast() },
                .invalidArgument("m has 4 offsets for 4 masks; expected 5")
            ),
            (
                "offsets not from 0", masks { $0.offsets[0] = 1 },
                .invalidArgument("m.offsets must run from 0 to the 9 pixels listed")
            ),
            (
                "offsets not to the end", masks { $0.offsets[4] = 8 },
                .invalidArgument("m.offsets must run from 0 to the 9 pixels listed")
            ),
            ("decreasing offsets", masks { $0.offsets[1] = 8 }, .invalidArgument("m.offsets decrease at mask 1")),
            (
                "pixel past the end", masks { $0.pixels[2] = 20 },
                .invalidArgument("m.pixels[2] = 20 lies outside the 20 pixel positions")
            ),
            (
                "negative pixel", masks { $0.pixels[0] = -1 },
                .invalidArgument("m.pixels[0] = -1 lies outside the 20 pixel positions")
            ),
            (
                "NaN multiplicity", masks { $0.multiplicity[1] = .nan },
                .invalidArgument("m.multiplicity[1] = nan must be finite and non-negative")
            ),
            (
                "negative multiplicity", masks { $0.multiplicity[0] = -1 },
                .invalidArgument("m.multiplicity[0] = -1.0 must be finite and non-negative")
            ),
            (
                "huge pixel count", masks { $0.pixelCount = 1 << 40 },
                .invalidArgument("m.pixel_count 1099511627776 is out of range")
            ),
        ]
        for (name, spec, expected) in cases {
            assertWireError(try MaskSet(wire: spec, field: "m"), name) { $0 == expected }
        }
        // Masks for other images than the queries'.
        var rng = SplitMix64(seed: 2)
        let q = WireTestSupport.queries(1, rng: &rng)
        let other = MaskSet(masks: [[0, 1]], pixelCount: 30)
        assertWireError(
            try PartialRequest(wire: Pspc_V1_PartialRequest(.cropNormalizers(queries: q, t: 1, crops: .masks(other))))
        ) {
            $0 == .invalidArgument("crop_normalizers.crops: masks are for 30 pixel positions, the images have 20")
        }
    }

    func testInvalidResponsesAreRejected() throws {
        let partials = SoftmaxPartials(m: [0, -.infinity], s: [1, 0], v: [1, 2, 3, 0, 0, 0], valueLength: 3)
        func softmax(_ edit: (inout Pspc_V1_SoftmaxPartialsMsg) -> Void) -> Pspc_V1_PartialResponse {
            var message = Pspc_V1_SoftmaxPartialsMsg(partials)
            edit(&message)
            var response = Pspc_V1_PartialResponse()
            response.softmax = message
            return response
        }
        func moments(_ edit: (inout Pspc_V1_MomentsMsg) -> Void) -> Pspc_V1_PartialResponse {
            var message = Pspc_V1_MomentsMsg(Moments(wireTestCount: 3, sum: [1, 2], outer: [1, 2, 3, 4]))
            edit(&message)
            var response = Pspc_V1_PartialResponse()
            response.moments = message
            return response
        }
        var sums = Pspc_V1_PartialResponse()
        sums.sums = Pspc_V1_Tensor(float64: [1, .nan], shape: [2])
        var sumsMatrix = Pspc_V1_PartialResponse()
        sumsMatrix.sums = Pspc_V1_Tensor(float64: [1, 2], shape: [1, 2])
        let cases: [(String, Pspc_V1_PartialResponse, WireError)] = [
            ("no result", Pspc_V1_PartialResponse(), .unknownOperation("the partial response carries no result")),
            (
                "m of another length", softmax { $0.m = Pspc_V1_Tensor(float64: [0], shape: [1]) },
                .invalidTensor("softmax.s has shape [2], expected [1]")
            ),
            (
                "NaN m", softmax { $0.m = Pspc_V1_Tensor(float64: [.nan, 0], shape: [2]) },
                .invalidTensor("softmax.m[0] is nan; log values must be finite or -inf")
            ),
            (
                "negative s", softmax { $0.s = Pspc_V1_Tensor(float64: [1, -1], shape: [2]) },
                .invalidTensor("softmax.s[1] is -1.0; sums of weights must be finite and >= 0")
            ),
            (
                "v of the wrong shape", softmax { $0.valueLength = 2 },
                .invalidTensor("softmax.v has shape [2, 3], expected [2, 2]")
            ),
            ("missing v", softmax { $0.clearV() }, .invalidArgument("softmax.v is missing")),
            ("missing m", softmax { $0.clearM() }, .invalidArgument("softmax.m is missing")),
            (
                "infinite v", softmax { $0.v = Pspc_V1_Tensor(float64: [1, 2, .infinity, 0, 0, 0], shape: [2, 3]) },
                .invalidTensor("softmax.v[2] is inf; values must be finite")
            ),
            ("NaN sums", sums, .invalidTensor("sums[1] is nan; values must be finite")),
            ("sums as a matrix", sumsMatrix, .invalidTensor("sums has shape [1, 2], expected [2]")),
            ("negative count", moments { $0.count = -1 }, .invalidArgument("moments.count is negative (-1)")),
            (
                "outer of the wrong shape", moments { $0.outer = Pspc_V1_Tensor(float64: [1, 2, 3, 4], shape: [4]) },
                .invalidTensor("moments.outer has shape [4], expected [2, 2]")
            ),
            ("missing outer", moments { $0.clearOuter() }, .invalidArgument("moments.outer is missing")),
        ]
        for (name, message, expected) in cases {
            assertWireError(try PartialResponse(wire: message), name) { $0 == expected }
        }
        // Sizes checked against the training set's shape.
        let image = ImageShape(channels: 1, height: 1, width: 3)
        XCTAssertNoThrow(try PartialResponse(wire: softmax { _ in }, shape: image))
        assertWireError(try PartialResponse(wire: softmax { _ in }, shape: shape)) { $0.code == .invalidArgument }
        assertWireError(try PartialResponse(wire: moments { _ in }, shape: image)) {
            $0 == .invalidArgument("moments of dimension 2, expected 3 (1x1x3)")
        }
        assertWireError(try PartialResponse(wire: Pspc_V1_PartialResponse(.sums([1, 2])), shape: image)) {
            $0 == .invalidArgument("2 sums are not a whole number of 1x1x3 images")
        }
    }

    func testErrorRepliesCarryCodeAndMessage() {
        let error = WireError.unsupportedVersion(got: 3, supported: 1)
        let frame = Pspc_V1_Frame.error(error, requestID: 12)
        XCTAssertEqual(frame.requestID, 12)
        guard case .error(let reply)? = frame.body else { return XCTFail() }
        XCTAssertEqual(reply.code, .unsupportedVersion)
        XCTAssertEqual(reply.message, "unsupported protocol version 3 (this side speaks version 1)")
        XCTAssertEqual(WireError(reply: reply), .peerError(code: .unsupportedVersion, message: reply.message))
    }
}
