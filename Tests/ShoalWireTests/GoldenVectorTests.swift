import Foundation
import NIOCore
import ShoalCore
import Testing

@testable import ShoalWire

@Suite("Golden vectors: the byte form of every message, as Docs/Protocol.md prints it")
struct GoldenVectorTests {
    @Test("encoding the message gives exactly the vector", arguments: Golden.vectors)
    func encodesToVector(_ vector: GoldenVector) throws {
        #expect(hexString(try WireCodec.encodedBytes(vector.message)) == hexString(bytes(hex: vector.hex)))
    }

    @Test("decoding the vector gives the message and consumes the whole frame", arguments: Golden.vectors)
    func decodesToMessage(_ vector: GoldenVector) throws {
        var buffer = ByteBuffer(bytes: bytes(hex: vector.hex))
        let message = try #require(try WireCodec.decode(frame: &buffer))
        #expect(message == vector.message)
        #expect(buffer.readableBytes == 0)
    }

    @Test("the vectors cover every message type")
    func everyTypeHasAVector() throws {
        let covered = Set(Golden.vectors.map(\.message.type))
        #expect(covered == Set(MessageType.allCases))
        for vector in Golden.vectors {
            #expect(bytes(hex: vector.hex)[5] == vector.message.type.rawValue, "\(vector.name)")
        }
    }

    @Test("the hello vector's overlay is SHA-256(network id LE ‖ public key)")
    func helloOverlayIsTheRealOne() {
        #expect(Overlay.address(networkID: Golden.hello.networkID, publicKey: Golden.hello.publicKey) == Golden.overlay)
    }

    @Test("the bytes a hello proof signs are laid out as Protocol.md §5 says")
    func helloProofSignedBytes() {
        let peerNonce = Array(UInt8(0xc0)...UInt8(0xdf))
        let signed = HelloProof.signedBytes(own: Golden.hello, peerNonce: peerNonce)
        let expected = bytes(hex: """
            73686f616c2d68656c6c6f2d7631
            0000000000000001
            000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
            dd5826d1a3b00e5675501b34ce37e53c7aeca1ac6d259ac3b9543c5eefeda7f2
            0102030405060708
            a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf
            c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf
            """)
        #expect(hexString(signed) == hexString(expected))
        #expect(signed.count == 158)
    }

    @Test("the bytes a receipt signs are laid out as Protocol.md §12 says")
    func receiptSignedBytes() throws {
        let signed = Receipt.signedBytes(networkID: 1, address: Golden.addressA)
        let expected = bytes(hex: """
            73686f616c2d726563656970742d7631
            0000000000000001
            aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
            """)
        #expect(hexString(signed) == hexString(expected))
        #expect(signed.count == 56)
        #expect(try ProtocolDocument.text().contains("""
            73686f616c2d726563656970742d7631
            0000000000000001
            aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
            """))
    }

    @Test("Protocol.md prints the same vectors as the tests")
    func documentMatchesTests() throws {
        let documented = try ProtocolDocument.goldenVectors()
        #expect(documented.map(\.name) == Golden.vectors.map(\.name))
        for vector in Golden.vectors {
            let hex = try #require(documented.first { $0.name == vector.name }?.hex, "\(vector.name) is missing from Protocol.md")
            #expect(hexString(bytes(hex: hex)) == hexString(bytes(hex: vector.hex)), "\(vector.name)")
        }
    }

    @Test("Protocol.md's type code table matches the codec")
    func documentTypeCodes() throws {
        let text = try ProtocolDocument.text()
        for type in MessageType.allCases {
            #expect(text.contains("| `\(WireCodec.hex(type.rawValue))` | `\(type)` |"), "\(type)")
        }
    }
}

/// Docs/Protocol.md, read from the repository this file is in.
enum ProtocolDocument {
    static func text() throws -> String {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Docs/Protocol.md")
        return try String(contentsOf: url, encoding: .utf8)
    }

    /// Each `#### name` heading in the golden-vector section followed by a ```hex block.
    static func goldenVectors() throws -> [(name: String, hex: String)] {
        let lines = try text().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var vectors: [(name: String, hex: String)] = []
        var name: String? = nil
        var hex: [String]? = nil
        for line in lines {
            if line.hasPrefix("#### ") {
                name = line.dropFirst(5).trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            } else if line == "```hex" {
                hex = []
            } else if line == "```", let block = hex {
                if let name { vectors.append((name, block.joined(separator: " "))) }
                hex = nil
                name = nil
            } else if hex != nil {
                hex?.append(line)
            }
        }
        return vectors
    }
}
