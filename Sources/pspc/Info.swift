import ArgumentParser
import Foundation
import PSPCCore
import PSPCData
import PSPCKernels

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a dataset directory and this machine's kernels.")

    @Option(help: "A directory written by `pspc ingest`.") var data: String?
    @Flag(help: "Also read and verify every shard.") var verify = false

    func run() async throws {
        print(
            "kernels: \(String(cString: pspc_kernel_level_name())), threads: \(ProcessInfo.processInfo.activeProcessorCount)"
        )
        guard let data else { return }
        let manifest = try Manifest.read(directory: data)
        print(
            "dataset: \(manifest.source), \(manifest.count) images of \(manifest.shape), \(manifest.shards.count) shards"
        )
        for shard in manifest.shards {
            print(
                "  \(shard.file): images \(shard.first)..<\(shard.first + shard.count), \(shard.bytes) bytes, sha256 \(shard.sha256.prefix(16))..."
            )
        }
        if verify {
            _ = try ShardStore.readAll(directory: data)
            print("all shards verified")
        }
    }
}
