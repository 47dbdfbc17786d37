import ArgumentParser
import Foundation
import PSPCCluster
import PSPCCore
import PSPCData

/// The `pspc` command: exact patch-posterior denoisers over a sharded training set.
@main
struct PSPC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pspc",
        abstract:
            "Exact patch-posterior denoisers (PSPC, optimal empirical, Gaussian, CFDM) over a sharded training set.",
        version: "0.1.0",
        subcommands: [
            Ingest.self, Synthesize.self, Queries.self, Denoise.self, Sample.self, SweepCommand.self, Calibrate.self,
            Heatmap.self, Report.self, Grid.self, Worker.self, Serve.self, Status.self, Info.self,
        ]
    )

    /// Runs the command; errors of pspc's own and file errors become one line `pspc: error: ...` and exit status 1.
    static func main() async {
        Logs.bootstrap()
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as DataError {
            fail(error.description)
        } catch let error as PSPCError {
            fail(error.description)
        } catch let error as ClusterError {
            fail(error.description)
        } catch {
            // Foundation's file errors (CocoaError, NSError) become "cannot write PATH: cause", never a raw dump.
            if let message = SystemError.describe(error) { fail(message) }
            exit(withError: error)
        }
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("pspc: error: \(message)\n".utf8))
        Foundation.exit(1)
    }
}

/// Prints a line to standard error (progress and notes; results go to files).
func note(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
