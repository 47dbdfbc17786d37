import ArgumentParser
import Dispatch
import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments

struct Denoise: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply a denoiser D(z, t) to a batch of noisy images.",
        discussion:
            "z.npy is float32 (or float64) [B, C, H, W] in data units ([-1, 1] plus noise); out.npy is float32 of the same shape."
    )

    @OptionGroup var engineOptions: EngineOptions
    @OptionGroup var methodOptions: MethodOptions
    @OptionGroup var networkOptions: NetworkOptions
    @Option(help: "Noise level t > 0 (EDM sigma).") var t: Double
    @Option(help: "Noisy queries z, .npy.") var input: String
    @Option(help: "Where to write D(z, t), .npy.") var output: String

    func validate() throws {
        guard t > 0 && t.isFinite else { throw ValidationError("--t must be positive and finite, got \(t)") }
        guard methodOptions.method != nil else { throw ValidationError("--method is required") }
    }

    func run() async throws {
        // Before any work: the result goes to a regular file that is not the queries themselves.
        try FileIO.checkOutput(output, inputs: [("--input", input)])
        if methodOptions.isNetwork { return try await runNetwork() }
        let context = try await engineOptions.context()
        let shape = context.shape
        let result: DenoisingEngine.Output
        let count: Int
        let method: DenoiseMethod
        var engineSeconds = 0.0
        do {
            method = try methodOptions.resolve(for: shape)
            let z = try QueryFile.read(input, shape: shape)
            count = z.count / shape.dimension
            let bar = ProgressBar("\(method.name) t=\(t)", total: count, unit: " queries")
            let started = DispatchTime.now().uptimeNanoseconds
            result = try await context.engine.denoise(z, t: t, method: method) { bar.update($0) }
            engineSeconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            await context.close()
        } catch {
            await context.close()
            throw error
        }
        if result.uncoveredPixels > 0 {
            note(
                "pspc-flex: \(result.uncoveredPixels) pixel values (\(result.uncoveredPixels / max(count, 1)) positions per query) had no mask; the empirical denoiser's values were used there"
            )
        } else if method.name == "pspc-flex" {
            note("pspc-flex: every pixel was covered by a mask")
        }
        try QueryFile.write(result.values, shape: shape, to: output)
        note(
            "wrote \(count) denoised images to \(output) (engine \(String(format: "%.3f", engineSeconds)) s, \(String(format: "%.2f", 1000 * engineSeconds / Double(max(count, 1)))) ms/query)"
        )
    }
}

extension Denoise {
    /// D_theta(z, t) from the network endpoint; the image shape comes from z.npy.
    func runNetwork() async throws {
        let array = try NPY.read(path: input)
        guard array.shape.count == 4 else {
            throw DataError.invalid("\(input): queries are \(array.shape), expected [B, C, H, W]")
        }
        let shape = ImageShape(channels: array.shape[1], height: array.shape[2], width: array.shape[3])
        let z = try QueryFile.read(input, shape: shape)
        let count = z.count / shape.dimension
        let network = try await networkOptions.connect()
        let values: [Double]
        do {
            let bar = ProgressBar("network t=\(t)", total: count, unit: " queries")
            values = try await network.denoiser.denoise(z, shape: shape, t: t) { bar.update($0) }
            await network.close()
        } catch {
            await network.close()
            throw error
        }
        try QueryFile.write(values, shape: shape, to: output)
        note("wrote \(count) denoised images to \(output)")
    }
}

/// Query and result arrays on disk: `[B, C, H, W]` float32 .npy.
enum QueryFile {
    static func read(_ path: String, shape: ImageShape) throws -> [Double] {
        let array = try NPY.read(path: path)
        let expected = [shape.channels, shape.height, shape.width]
        guard array.shape.count == 4, Array(array.shape[1...]) == expected else {
            throw DataError.invalid(
                "\(path): queries are \(array.shape), expected [B, \(expected.map(String.init).joined(separator: ", "))] to match the training set"
            )
        }
        let values: [Double]
        switch array.data {
        case .float32(let v): values = v.map(Double.init)
        case .float64(let v): values = v
        case .uint8: throw DataError.invalid("\(path): queries must be float32 or float64, not uint8")
        }
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw DataError.invalid("\(path): query \(bad / shape.dimension) holds a non-finite value (\(values[bad]))")
        }
        return values
    }

    static func write(_ values: [Double], shape: ImageShape, to path: String) throws {
        try FileIO.writeAtomically(encode(values, shape: shape), to: path)
    }

    /// The .npy bytes of `values` as float32 `[B, C, H, W]`.
    static func encode(_ values: [Double], shape: ImageShape) -> [UInt8] {
        let count = values.count / shape.dimension
        return NPY.encode(
            NPYArray(shape: [count, shape.channels, shape.height, shape.width], data: .float32(values.map(Float.init))))
    }
}
