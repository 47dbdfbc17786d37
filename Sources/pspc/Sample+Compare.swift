import ArgumentParser
import Foundation
import PSPCCore
import PSPCData
import PSPCExperiments

extension Sample {
    /// `pspc sample --compare`: every method from the same noise, then their similarity.
    func runCompare() async throws {
        let names = methods!.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        // Held for the whole write, before the engine or the network is started.
        let locks = try RunLocks(writing: out, makesRun: true)
        defer { locks.release() }
        let needsEngine = names.contains { $0 != "network" }
        let methodNames = names.map { $0.split(separator: "=", maxSplits: 1).first.map(String.init) ?? $0 }
        let context = needsEngine ? try await engineOptions.context() : nil
        var networks: [NetworkOptions.Connected] = []
        do {
            if methodNames.contains("network") { networks = try await networkOptions.connectAll() }
            let shape: ImageShape
            if let context {
                shape = context.shape
            } else {
                guard let data = engineOptions.data else { throw ValidationError("--compare needs --data for the image shape") }
                shape = try Manifest.read(directory: data).shape
            }
            // `network` stands for every network given, each under its name.
            let variants = try methodOptions.variants(items: names, for: shape).flatMap { variant in
                variant.isNetwork ? networkOptions.entries.map(\.variant) : [variant]
            }
            let run = RunDirectory(out)
            try run.prepare(config: config(variants: variants, shape: shape, source: context?.source))
            let comparison = try SampleComparison(
                run: run, shape: shape, count: count, seed: seed, steps: steps, solver: solver, variants: variants)
            let bar = ProgressBar(
                "sample compare", total: variants.count * comparison.evaluations * count, unit: " evals")
            let denoisers = networks.map { connected -> BatchDenoiser in
                { z, t, progress in try await connected.denoiser.denoise(z, shape: shape, t: t, progress: progress) }
            }
            try await comparison.draw(engine: context?.engine, networks: denoisers) { done, total in
                bar.update(done, total: total)
            }
            try comparison.writeResults()
            _ = try RunFigures.write(for: run)
            try run.markComplete()
            for network in networks { await network.close() }
            await context?.close()
        } catch {
            for network in networks { await network.close() }
            await context?.close()
            throw error
        }
        note("wrote \(names.count) methods' samples and their similarity to \(out) (samples.png, similarity.csv, similarity-per-sample.csv)")
        let text = String(decoding: try FileIO.read(RunDirectory(out).file("similarity.csv")), as: UTF8.self)
        FileHandle.standardError.write(Data(text.utf8))
    }

    func config(variants: [Variant], shape: ImageShape, source: String?) throws -> JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("kind", .string("sample-compare")), ("version", .int(1)),
            ("command", .string(CommandLine.arguments.joined(separator: " "))),
            ("methods", .strings(variants.map(\.label))), ("count", .int(count)), ("seed", .int(Int(seed))),
            ("steps", .int(steps)), ("solver", .string(solver.rawValue)),
            ("shape", .ints([shape.channels, shape.height, shape.width])),
            ("dataset", try datasetConfig(engineOptions)), ("network", networkOptions.config),
        ]
        pairs += methodOptions.config
        return .object(pairs)
    }
}

/// The training set a command used, for config.json: its source and fingerprint (which shards, byte for byte).
func datasetConfig(_ options: EngineOptions) throws -> JSONValue {
    guard let data = options.data else { return .object([("cluster", .string(options.cluster ?? ""))]) }
    let manifest = try Manifest.read(directory: data)
    return .object([
        ("directory", .string(data)), ("source", .string(manifest.source)), ("images", .int(manifest.count)),
        ("fingerprint", .string(manifest.fingerprint)), ("xflip", .bool(options.xflip == .on)),
    ])
}

extension NetworkOptions {
    /// Which network served a run, for config.json.
    /// config.json's `network`: for one network the object it always was (so older runs resume); for several,
    /// an array of them, each with its name.
    var config: JSONValue {
        let objects = entries.map { entry -> JSONValue in
            var fields: [(String, JSONValue)] = entry.name.map { [("name", .string($0))] } ?? []
            if entry.local {
                let digest = (try? FileIO.read(entry.value)).map { Manifest.sha256Hex($0) } ?? "unreadable"
                fields += [("checkpoint", .string(entry.value)), ("sha256", .string(digest)), ("device", .string(networkDevice))]
                // Only when given, so the config of a run started before these options stays the same.
                if !endpointArguments.isEmpty { fields.append(("arguments", .array(endpointArguments.map(JSONValue.string)))) }
            } else {
                fields.append(("endpoint", .string(entry.value)))
            }
            return .object(fields)
        }
        switch objects.count {
        case 0: return .null
        case 1 where entries[0].name == nil: return objects[0]
        default: return .array(objects)
        }
    }
}
