// swift-tools-version: 6.0
import PackageDescription

/// pspc: exact patch-posterior denoisers (PSPC, the optimal empirical denoiser and baselines),
/// distributed over shards of a training set. Modules are layered by dependency (see docs/design.md):
/// system shims -> PSPCKernels (vector C kernels) -> PSPCCore (math, no I/O) -> PSPCData (files),
/// PSPCWire (protocol, no sockets) -> PSPCCluster (SwiftNIO) -> PSPCExperiments (sweeps, reports) -> pspc (command line).
let package = Package(
    name: "pspc",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "pspc", targets: ["pspc"]),
        .executable(name: "pspc-bench", targets: ["pspc-bench"]),
        .library(name: "PSPCCore", targets: ["PSPCCore"]),
        .library(name: "PSPCData", targets: ["PSPCData"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // MARK: - System libraries (installed by scripts/setup.sh)
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // MARK: - Hot loops: float64 vector kernels, dispatched at run time by CPU level
        .target(
            name: "PSPCKernels",
            cSettings: [.unsafeFlags(["-O3", "-Wno-psabi"])]
        ),

        // MARK: - Modules
        .target(name: "PSPCCore", dependencies: ["CBLAS", "PSPCKernels"]),
        .target(
            name: "PSPCData",
            dependencies: ["PSPCCore", "CZstd", "CZlib", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "PSPCWire",
            dependencies: [
                "PSPCCore",
                "PSPCData",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "PSPCCluster",
            dependencies: [
                "PSPCCore", "PSPCData", "PSPCWire",
                .product(name: "Yams", package: "Yams"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Sweeps, calibration, sample comparison and reports: run directories on disk, denoisers passed in.
        .target(name: "PSPCExperiments", dependencies: ["PSPCCore", "PSPCData"]),
        .executableTarget(
            name: "pspc",
            dependencies: [
                "PSPCCore", "PSPCData", "PSPCCluster", "PSPCExperiments",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),

        .executableTarget(
            name: "pspc-bench",
            dependencies: [
                "PSPCCore", "PSPCData", "PSPCCluster",
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),

        // MARK: - Tests
        .target(name: "PSPCTestSupport", path: "Tests/PSPCTestSupport"),
        .testTarget(name: "PSPCCoreTests", dependencies: ["PSPCCore", "PSPCData"]),
        .testTarget(name: "PSPCDataTests", dependencies: ["PSPCData"]),
        .testTarget(name: "PSPCWireTests", dependencies: ["PSPCWire", "PSPCCore"]),
        .testTarget(
            name: "PSPCClusterTests", dependencies: ["PSPCCluster", "PSPCCore", "PSPCData", "PSPCWire", "PSPCTestSupport"]),
        .testTarget(name: "PSPCExperimentsTests", dependencies: ["PSPCExperiments", "PSPCCore", "PSPCData"]),
        .testTarget(name: "pspcTests", dependencies: ["PSPCCore", "PSPCData", "PSPCTestSupport"]),
        // Slow: real worker processes killed, stopped and restarted.
        .testTarget(
            name: "ClusterProcessTests",
            dependencies: [
                "PSPCCore", "PSPCData", "PSPCCluster", "PSPCTestSupport",
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ]
)
