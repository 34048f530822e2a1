import ShoalCore
import Testing

@testable import ShoalFiles

/// Pinned roots of small files whose byte i is i mod 251 (listed in Docs/Files.md). A change
/// here is a change of the file format.
@Suite struct GoldenVectorTests {
    struct Vector: Sendable, CustomStringConvertible {
        let size: Int
        let level: RedundancyLevel
        let root: String
        let chunks: Int
        var description: String { "\(size) bytes, \(level)" }
    }

    static let vectors: [Vector] = [
        Vector(size: 0, level: .none, root: "3e7077fd2f66d689e0cee6a7cf5b37bf2dca7c979af356d0a31cbc5c85605c7d", chunks: 1),
        Vector(size: 1, level: .none, root: "a536aa3cede6ea3c1f3e0357c3c60e0f216a8c89b853df13b29daa8f85065dfb", chunks: 1),
        Vector(size: 4096, level: .none, root: "89317167f99ed3b68c946cba204ff0c27f9f4cdb64f51a4cb34a9973c2651bed", chunks: 1),
        Vector(size: 4097, level: .none, root: "7d18ecf03635724c2dcb23eec1630f6d115d6ed55aa7fdbbffafe6ae2544a2e7", chunks: 3),
        Vector(size: 524288, level: .none, root: "81a0f5ed04af497363e4ba7385384a3d083d25bbb60a7a7f32c8c3daa4cdde59", chunks: 129),
        Vector(size: 524289, level: .none, root: "74e6cb7ff6708157f43d2e8acbc4ff8a0578ea4605d1985078b8530165b3fc96", chunks: 131),
        Vector(size: 0, level: .medium, root: "3e7077fd2f66d689e0cee6a7cf5b37bf2dca7c979af356d0a31cbc5c85605c7d", chunks: 1),
        Vector(size: 1, level: .medium, root: "a536aa3cede6ea3c1f3e0357c3c60e0f216a8c89b853df13b29daa8f85065dfb", chunks: 1),
        Vector(size: 4096, level: .medium, root: "89317167f99ed3b68c946cba204ff0c27f9f4cdb64f51a4cb34a9973c2651bed", chunks: 1),
        Vector(size: 4097, level: .medium, root: "e215f9451e86f83493fefdfb12825dcbc1130e2039b326f1bd2d0be2a8f50448", chunks: 4),
        Vector(size: 524288, level: .medium, root: "83f5f0a6f604cc67daea75c11a8e819106862559e799336e2c640d1cc633d756", chunks: 142),
        Vector(size: 524289, level: .medium, root: "e726178b17c58a1f49d23862c49ae693853f61c338e6fe1b65be1033095dc09c", chunks: 143),
    ]

    @Test("golden roots", arguments: vectors)
    func golden(vector: Vector) async throws {
        let bytes = goldenBytes(vector.size)
        let file = try split(bytes, redundancy: vector.level)
        #expect(file.root.hex == vector.root)
        #expect(file.chunks.count == vector.chunks)
        let reader = try await FileReader.open(root: file.root, source: file.source)
        #expect(try await read(reader) == bytes)
    }
}
