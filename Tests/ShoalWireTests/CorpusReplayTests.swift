import Foundation
import NIOCore
import ShoalCore
import Testing

@testable import ShoalWire

@Suite("The committed fuzz corpus replays without a crash")
struct CorpusReplayTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Corpus")

    static func files() throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: [.fileSizeKey])
            .filter { !$0.lastPathComponent.hasPrefix(".") }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    @Test("each input decodes to canonical frames or is rejected with a WireError, however it is split")
    func replay() throws {
        var random = SplitMix64(seed: 0xc0de)
        var decoded = 0
        var rejected = 0
        for file in try Self.files() {
            let input = try [UInt8](Data(contentsOf: file))
            let whole: Result<[Message], WireError> = Result { () throws(WireError) in try decodeAll(input) }
            switch whole {
            case .success(let messages):
                decoded += 1
                var reencoded: [UInt8] = []
                for message in messages { reencoded += try WireCodec.encodedBytes(message) }
                #expect(reencoded == input, "\(file.lastPathComponent) does not re-encode to itself")
            case .failure:
                rejected += 1
            }
            // The NIO decoder, fed in random pieces, agrees with the whole-buffer decode.
            let pieces = randomPieces(totalBytes: input.count, using: &random)
            let split: Result<[Message], WireError>
            do {
                split = .success(try decodeThroughProcessor(input, pieces: pieces))
            } catch let error as WireError {
                split = .failure(error)
            } catch {
                Issue.record("\(file.lastPathComponent): MessageDecoder threw \(error), not a WireError")
                continue
            }
            #expect(split == whole, "\(file.lastPathComponent)")
        }
        #expect(decoded > 0 && rejected > 0)
    }

    @Test("the corpus stays small: at most 200 files and 1 MiB")
    func corpusIsSmall() throws {
        let files = try Self.files()
        let total = try files.reduce(0) { $0 + (try $1.resourceValues(forKeys: [.fileSizeKey]).fileSize ?? 0) }
        #expect(files.count >= Golden.vectors.count)
        #expect(files.count <= 200)
        #expect(total <= 1 << 20)
    }

    @Test("every golden vector is a corpus seed")
    func goldenVectorsAreSeeds() throws {
        for vector in Golden.vectors {
            let file = Self.directory.appendingPathComponent("golden-\(vector.name)")
            #expect(try [UInt8](Data(contentsOf: file)) == bytes(hex: vector.hex), "\(vector.name)")
        }
    }
}
