// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Shoal",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LMDB", targets: ["LMDB"]),
        .library(name: "ShoalCore", targets: ["ShoalCore"]),
        .library(name: "ShoalStore", targets: ["ShoalStore"]),
        .library(name: "ShoalNode", targets: ["ShoalNode"]),
        .library(name: "ShoalErasure", targets: ["ShoalErasure"]),
        .library(name: "ShoalFiles", targets: ["ShoalFiles"]),
        .library(name: "ShoalSimulation", targets: ["ShoalSimulation"]),
        .executable(name: "shoal", targets: ["shoal"]),
        .executable(name: "lmdb-inspect", targets: ["lmdb-inspect"]),
        .executable(name: "shoal-bench", targets: ["shoal-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.34.1"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        // Header names of our own (`Shoal-Pin`…); Hummingbird builds on it already.
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        // `GET /metrics`: a Prometheus registry per API instance (never the global `MetricsSystem`).
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
    ],
    targets: [
        // Debian's liblmdb-dev, found through its lmdb.pc.
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        // Debian's libisal-dev (Intel ISA-L), found through its libisal.pc: Reed–Solomon kernels.
        .systemLibrary(
            name: "CISAL",
            pkgConfig: "libisal",
            providers: [.apt(["libisal-dev"])]
        ),
        // The project's lock: a value behind a pthread mutex (ThreadSanitizer sees it; decision 0014).
        .target(name: "Locking"),
        // A small synchronous wrapper: environments, closure-scoped transactions, tables, cursors.
        .target(name: "LMDB", dependencies: ["CLMDB", "Locking"]),
        // Pure: chunks, addresses, proximity. No I/O, no LMDB.
        .target(
            name: "ShoalCore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")]
        ),
        // Pure: Reed–Solomon erasure coding over GF(2^8) with ISA-L's kernels. No I/O.
        .target(name: "ShoalErasure", dependencies: ["CISAL", "Locking"]),
        // Pure: files as chunk trees (split, read, seek, parity). No I/O.
        .target(name: "ShoalFiles", dependencies: ["ShoalCore", "ShoalErasure"]),
        // Pure: many nodes' machines on a virtual clock, a seeded network and in-memory stores.
        .target(name: "ShoalSimulation", dependencies: ["ShoalCore"]),
        // Frames and messages: byte-exact encode/decode (NIOCore only).
        .target(
            name: "ShoalWire",
            dependencies: ["ShoalCore", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // Schema, chunk store with slot files, sync state, store writer, verify and repair.
        .target(name: "ShoalStore", dependencies: ["LMDB", "ShoalCore", "Locking"]),

        // The running node: identity, TLS transport, peer actors, supervisor, the `Node` facade.
        .target(
            name: "ShoalNode",
            dependencies: [
                "ShoalCore", "ShoalWire", "ShoalStore", "ShoalFiles", "Locking",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),

        // The HTTP API (Hummingbird) over a running node.
        .target(
            name: "ShoalAPI",
            dependencies: [
                "ShoalNode", "ShoalCore", "ShoalStore", "ShoalFiles", "Locking",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                // The pipeline pieces under Hummingbird's HTTP/1 channel (`MalformedRequestHandler`).
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                // `ShoalMetrics`: its own registry, and a swift-metrics factory over it.
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        // `shoal start`: the daemon.
        .executableTarget(
            name: "shoal",
            dependencies: [
                "ShoalNode", "ShoalAPI", "ShoalCore", "ShoalStore", "Locking",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),

        .executableTarget(
            name: "lmdb-inspect",
            dependencies: [
                "ShoalStore", "LMDB", "ShoalCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/lmdb-inspect"
        ),
        .executableTarget(
            name: "shoal-bench",
            dependencies: [
                "ShoalStore", "LMDB", "ShoalCore", "ShoalNode", "ShoalWire", "Locking", "ShoalErasure", "ShoalFiles",
                "ShoalSimulation",
                // The files bench's SHA-256 floor.
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // The flood's hostile clients: the transport's own dialler, a relay that gives
                // each client its own source address, raw writes beneath the frame codec.
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tools/shoal-bench"
        ),

        // The wire decoder's fuzz target: built with `--sanitize fuzzer` it is a libFuzzer
        // binary; built normally it replays a corpus directory through the decoder.
        .executableTarget(
            name: "shoal-wire-fuzz",
            dependencies: ["ShoalWire", "ShoalCore", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tools/shoal-wire-fuzz"
        ),

        // Helpers the test targets share (decision 0022): a manual clock, seeded chunks, bounded
        // waits, temporary directories and stores that report leaked transactions. It imports
        // the toolchain's `Testing` to record issues; only test targets depend on it.
        .target(name: "ShoalTestSupport", dependencies: ["ShoalCore", "ShoalStore", "LMDB", "Locking"]),

        .testTarget(name: "LMDBTests", dependencies: ["LMDB"]),
        .testTarget(
            name: "ShoalTestSupportTests",
            dependencies: ["ShoalTestSupport", "ShoalStore", "LMDB", "ShoalCore", "Locking"]
        ),
        .testTarget(
            name: "ShoalWireTests",
            dependencies: [
                "ShoalWire", "ShoalCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            exclude: ["Corpus"]
        ),
        .testTarget(name: "ShoalCoreTests", dependencies: ["ShoalCore"]),
        .testTarget(name: "ShoalErasureTests", dependencies: ["ShoalErasure", "ShoalCore"]),
        .testTarget(name: "ShoalFilesTests", dependencies: ["ShoalFiles", "ShoalCore", "ShoalTestSupport"]),
        .testTarget(name: "ShoalSimulationTests", dependencies: ["ShoalSimulation", "ShoalCore"]),
        .testTarget(name: "ShoalStoreTests", dependencies: ["ShoalStore", "LMDB", "ShoalCore", "Locking", "ShoalTestSupport"]),
        .testTarget(
            name: "ShoalAPITests",
            dependencies: [
                "ShoalAPI", "ShoalNode", "ShoalCore", "ShoalStore", "ShoalFiles", "shoal", "Locking", "ShoalTestSupport",
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                // A swift-metrics counter made through `ShoalMetrics.factory`.
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "ShoalNodeTests",
            dependencies: [
                "ShoalNode", "ShoalCore", "ShoalWire", "ShoalStore", "Locking", "ShoalTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The terminal client: progress formatting, the blocking HTTP client against a real
        // local server, and the `shoal` binary as a process (usage errors, exit statuses).
        .testTarget(
            name: "ShoalCLITests",
            dependencies: [
                "shoal", "ShoalAPI", "ShoalCore", "Locking", "ShoalTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        // Runs the built executables as real processes (the inspector, the crash loop).
        .testTarget(
            name: "ToolTests",
            dependencies: ["ShoalStore", "LMDB", "ShoalCore", "Locking", "ShoalTestSupport", "lmdb-inspect", "shoal-bench", "shoal"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
