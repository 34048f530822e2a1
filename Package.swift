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
    ],
    targets: [
        // Debian's liblmdb-dev, found through its lmdb.pc.
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
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
                "ShoalCore", "ShoalWire", "ShoalStore", "Locking",
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
                "ShoalNode", "ShoalCore", "ShoalStore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                // The pipeline pieces under Hummingbird's HTTP/1 channel (`MalformedRequestHandler`).
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
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
                "ShoalStore", "LMDB", "ShoalCore", "ShoalNode", "ShoalWire", "Locking",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // The flood's hostile clients: the transport's own dialler, a relay that gives
                // each client its own source address, raw writes beneath the frame codec.
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                // The file bench checks what it downloads by SHA-256 as the bytes arrive.
                .product(name: "Crypto", package: "swift-crypto"),
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

        .testTarget(name: "LMDBTests", dependencies: ["LMDB"]),
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
        .testTarget(name: "ShoalStoreTests", dependencies: ["ShoalStore", "LMDB", "ShoalCore", "Locking"]),
        .testTarget(
            name: "ShoalAPITests",
            dependencies: [
                "ShoalAPI", "ShoalNode", "ShoalCore", "shoal", "Locking",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
        .testTarget(
            name: "ShoalNodeTests",
            dependencies: [
                "ShoalNode", "ShoalCore", "ShoalWire", "ShoalStore", "Locking",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Runs the built executables as real processes (the inspector, the crash loop).
        .testTarget(
            name: "ToolTests",
            dependencies: ["ShoalStore", "LMDB", "ShoalCore", "Locking", "lmdb-inspect", "shoal-bench", "shoal"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
