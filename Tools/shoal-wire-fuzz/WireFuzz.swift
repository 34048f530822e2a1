// The wire decoder's fuzz target.
//
// Built with `-D SHOAL_FUZZING` and `--sanitize fuzzer` (Tools/fuzz-wire.sh) it is a libFuzzer
// binary: every input goes through `WireFuzz.exercise`. Built normally it is a program that
// replays corpus files through the same function:
//
//     shoal-wire-fuzz CORPUS_DIR_OR_FILE...
//     RESULT name=wire-corpus-replay files=N decoded=D rejected=R messages=M
//
// `exercise` traps (a finding) when the decoder disagrees with itself: feeding the bytes whole,
// in random splits through the NIO decoder, or one byte at a time must give the same messages
// and the same error; and every decoded message must re-encode to exactly the bytes it came
// from and decode back to itself.

import NIOCore
import ShoalCore
import ShoalWire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What the decoder made of one input, the input's end taken as the connection's end.
struct WireFuzzOutcome: Equatable {
    var messages: [Message] = []
    /// nil: every byte was consumed by whole frames.
    var error: WireError? = nil
}

enum WireFuzz {
    /// Runs the input through every decoding path and checks they agree; traps on a finding.
    static func exercise(_ input: UnsafeRawBufferPointer) -> WireFuzzOutcome {
        let whole = decodeWhole(input)
        let split = decodeSplit(input, seed: fnv1a(input))
        let bytewise = decodeByteByByte(input)
        check(split == whole, "split feed disagrees with whole decode", whole, split)
        check(bytewise == whole, "byte-by-byte feed disagrees with whole decode", whole, bytewise)
        return whole
    }

    /// One buffer holding everything; every decoded frame is checked to be canonical.
    static func decodeWhole(_ input: UnsafeRawBufferPointer) -> WireFuzzOutcome {
        var outcome = WireFuzzOutcome()
        var buffer = ByteBuffer(bytes: input)
        // A frame is at least 6 bytes, so this bounds the loop.
        for _ in 0...(input.count / WireFormat.headerBytes) {
            let start = buffer.readerIndex
            do {
                guard let message = try WireCodec.decode(frame: &buffer) else { break }
                let frame = Array(input[start..<buffer.readerIndex])
                checkCanonical(message, frame: frame)
                outcome.messages.append(message)
            } catch {
                outcome.error = error
                check(buffer.readerIndex == start, "a failed decode moved the reader index")
                return outcome
            }
        }
        if buffer.readableBytes > 0 {
            // What `MessageDecoder.decodeLast` says when the connection ends inside a frame.
            outcome.error = WireError(.truncated, "the connection ended \(buffer.readableBytes) bytes into a frame")
        }
        return outcome
    }

    /// Random splits through `MessageDecoder`, driven the way `ByteToMessageHandler` drives it.
    static func decodeSplit(_ input: UnsafeRawBufferPointer, seed: UInt64) -> WireFuzzOutcome {
        var outcome = WireFuzzOutcome()
        var random = SplitMix64(seed: seed)
        let processor = NIOSingleStepByteToMessageProcessor(MessageDecoder())
        var offset = 0
        do {
            while offset < input.count {
                // Mostly small pieces, so that headers and fields are cut everywhere.
                let pieceMax = random.next() % 4 == 0 ? 512 : 7
                let piece = min(input.count - offset, 1 + Int(random.next() % UInt64(pieceMax)))
                try processor.process(buffer: ByteBuffer(bytes: input[offset..<offset + piece])) { outcome.messages.append($0) }
                offset += piece
            }
            try processor.finishProcessing(seenEOF: true) { outcome.messages.append($0) }
        } catch {
            outcome.error = error as? WireError
            check(outcome.error != nil, "MessageDecoder threw something other than a WireError: \(error)")
        }
        return outcome
    }

    /// One byte at a time into one accumulating buffer, through `WireCodec.decode`.
    static func decodeByteByByte(_ input: UnsafeRawBufferPointer) -> WireFuzzOutcome {
        var outcome = WireFuzzOutcome()
        var buffer = ByteBuffer()
        for byte in input {
            buffer.writeInteger(byte)
            do {
                let before = buffer.readableBytes
                if let message = try WireCodec.decode(frame: &buffer) {
                    outcome.messages.append(message)
                    check(buffer.readableBytes == 0, "a frame completed by its last byte left bytes behind")
                } else {
                    check(buffer.readableBytes == before, "decode returned nil but consumed bytes")
                }
            } catch {
                outcome.error = error
                return outcome
            }
        }
        if buffer.readableBytes > 0 {
            outcome.error = WireError(.truncated, "the connection ended \(buffer.readableBytes) bytes into a frame")
        }
        return outcome
    }

    /// A decoded message re-encodes to exactly its frame, and that decodes back to it.
    static func checkCanonical(_ message: Message, frame: [UInt8]) {
        let encoded: [UInt8]
        do {
            encoded = try WireCodec.encodedBytes(message)
        } catch {
            fatalError("a decoded message does not encode: \(error)\n\(message)")
        }
        check(encoded == frame, "re-encoding differs from the frame it was decoded from:\n\(hex(frame))\n\(hex(encoded))")
        do {
            let again = try WireCodec.decode(exactFrame: encoded)
            check(again == message, "decode(encode(m)) != m:\n\(message)\n\(again)")
        } catch {
            fatalError("an encoded message does not decode: \(error)\n\(message)")
        }
    }

    static func check(_ condition: Bool, _ what: @autoclosure () -> String) {
        if !condition { fatalError("wire fuzz finding: \(what())") }
    }

    static func check(_ condition: Bool, _ what: String, _ expected: WireFuzzOutcome, _ actual: WireFuzzOutcome) {
        if !condition {
            fatalError("wire fuzz finding: \(what)\nwhole: \(expected.messages.count) messages, \(String(describing: expected.error))\nother: \(actual.messages.count) messages, \(String(describing: actual.error))")
        }
    }

    static func fnv1a(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef")
        return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xf)]] })
    }
}

#if SHOAL_FUZZING

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    _ = WireFuzz.exercise(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#else

@main
struct ShoalWireFuzz {
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        guard !arguments.isEmpty, !arguments.contains("--help"), !arguments.contains("-h") else {
            print("usage: shoal-wire-fuzz [--verbose] CORPUS_DIR_OR_FILE...")
            print("Replays every file through the wire decoder (whole, split and byte by byte) and")
            print("checks that each decodes canonically or is rejected with a WireError.")
            print("--verbose prints each file's outcome.")
            exit(arguments.isEmpty ? 2 : 0)
        }
        let verbose = arguments.contains("--verbose")
        arguments.removeAll { $0 == "--verbose" }
        var files = 0, decoded = 0, rejected = 0, messages = 0
        for argument in arguments {
            let paths: [String]
            do {
                paths = try CorpusFiles.list(argument)
            } catch {
                printError("shoal-wire-fuzz: \(error)")
                exit(1)
            }
            for path in paths {
                let bytes: [UInt8]
                do {
                    bytes = try CorpusFiles.read(path)
                } catch {
                    printError("shoal-wire-fuzz: \(error)")
                    exit(1)
                }
                let outcome = bytes.withUnsafeBytes { WireFuzz.exercise($0) }
                files += 1
                messages += outcome.messages.count
                if outcome.error == nil { decoded += 1 } else { rejected += 1 }
                if verbose {
                    let types = outcome.messages.map { "\($0.type)" }.joined(separator: ",")
                    print("\(path): \(bytes.count) bytes, \(outcome.messages.count) messages [\(types)], \(outcome.error.map { "\($0)" } ?? "decoded")")
                }
            }
        }
        print("RESULT name=wire-corpus-replay files=\(files) decoded=\(decoded) rejected=\(rejected) messages=\(messages)")
    }

    static func printError(_ line: String) {
        var text = line + "\n"
        _ = text.withUTF8 { write(2, $0.baseAddress, $0.count) }
    }
}

/// Files named on the command line, or the regular files directly inside a directory, in name
/// order; no Foundation, so the fuzz build links as little as possible.
enum CorpusFiles {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static let fileBytesMax = 16 << 20

    static func list(_ path: String) throws(Failure) -> [String] {
        var info = stat()
        guard stat(path, &info) == 0 else { throw Failure(description: "\(path): \(errnoText())") }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { return [path] }
        guard let dir = opendir(path) else { throw Failure(description: "\(path): \(errnoText())") }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(".") { continue }
            var child = stat()
            let full = path + "/" + name
            if stat(full, &child) == 0, (child.st_mode & S_IFMT) == S_IFREG { names.append(full) }
        }
        return names.sorted()
    }

    static func read(_ path: String) throws(Failure) -> [UInt8] {
        guard let file = fopen(path, "rb") else { throw Failure(description: "\(path): \(errnoText())") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var block = [UInt8](repeating: 0, count: 1 << 16)
        while bytes.count <= fileBytesMax {
            let n = block.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if n == 0 { break }
            bytes.append(contentsOf: block[0..<n])
        }
        guard ferror(file) == 0 else { throw Failure(description: "\(path): read failed") }
        guard bytes.count <= fileBytesMax else { throw Failure(description: "\(path): larger than \(fileBytesMax) bytes") }
        return bytes
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}

#endif
