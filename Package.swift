// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Shoal",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "LMDB", targets: ["LMDB"]),
        .library(name: "ShoalCore", targets: ["ShoalCore"]),
        .library(name: "ShoalStore", targets: ["ShoalStore"]),
        .executable(name: "lmdb-inspect", targets: ["lmdb-inspect"]),
        .executable(name: "shoal-bench", targets: ["shoal-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
    ],
    targets: [
        // Debian's liblmdb-dev, found through its lmdb.pc.
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        // A small synchronous wrapper: environments, closure-scoped transactions, tables, cursors.
        .target(name: "LMDB", dependencies: ["CLMDB"]),
        // Pure: chunks, addresses, proximity. No I/O, no LMDB.
        .target(
            name: "ShoalCore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")]
        ),
        // Schema, chunk store with slot files, sync state, store writer, verify and repair.
        .target(name: "ShoalStore", dependencies: ["LMDB", "ShoalCore"]),

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
                "ShoalStore", "LMDB", "ShoalCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/shoal-bench"
        ),

        .testTarget(name: "LMDBTests", dependencies: ["LMDB"]),
        .testTarget(name: "ShoalCoreTests", dependencies: ["ShoalCore"]),
        .testTarget(name: "ShoalStoreTests", dependencies: ["ShoalStore", "LMDB", "ShoalCore"]),
        // Runs the built executables as real processes (the inspector, the crash loop).
        .testTarget(
            name: "ToolTests",
            dependencies: ["ShoalStore", "LMDB", "ShoalCore", "lmdb-inspect", "shoal-bench"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
