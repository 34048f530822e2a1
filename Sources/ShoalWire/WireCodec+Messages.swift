import NIOCore
import ShoalCore

// The payload of each message, both ways. The layouts are the tables of Docs/Protocol.md §4;
// the writer and the reader of one message sit next to each other so they can be read
// against each other and against the table.

extension WireCodec {
    static func writePayload(_ message: Message, into buffer: inout ByteBuffer) throws(WireError) {
        let type = message.type
        switch message {
        case .hello(let hello):
            try checkFixed(hello.publicKey, WireFormat.publicKeyBytes, type, "publicKey")
            try checkFixed(hello.nonce, WireFormat.nonceBytes, type, "nonce")
            try checkListenAddresses(hello.listenAddresses, count: 0...ProtocolLimits.listenAddressesMax, type, "listenAddresses")
            try checkText(hello.agent, 0...ProtocolLimits.agentBytesMax, type, "agent")
            buffer.writeInteger(hello.networkID)
            buffer.writeBytes(hello.publicKey)
            buffer.writeAddress(hello.overlay)
            buffer.writeInteger(hello.epoch)
            buffer.writeBytes(hello.nonce)
            buffer.writeTexts(hello.listenAddresses)
            buffer.writeText(hello.agent)

        case .helloProof(let proof):
            try checkFixed(proof.signature, WireFormat.signatureBytes, type, "signature")
            buffer.writeBytes(proof.signature)

        case .ping(let nonce), .pong(let nonce):
            buffer.writeInteger(nonce)

        case .goodbye(let goodbye):
            try checkText(goodbye.message, 0...ProtocolLimits.messageTextBytesMax, type, "message")
            buffer.writeInteger(goodbye.reason.rawValue)
            buffer.writeText(goodbye.message)

        case .streamInfoRequest(let request):
            try checkCount(request.bins.count, 0...WireFormat.binsMax, type, "bins")
            for bin in request.bins { try checkBin(bin, type, "bins[]") }
            buffer.writeInteger(UInt16(request.bins.count))
            buffer.writeBytes(request.bins)

        case .streamInfoResponse(let response):
            try checkCount(response.cursors.count, 0...WireFormat.binsMax, type, "cursors")
            for entry in response.cursors { try checkBin(entry.bin, type, "cursors[].bin") }
            buffer.writeInteger(response.epoch)
            buffer.writeInteger(UInt16(response.cursors.count))
            for entry in response.cursors {
                buffer.writeInteger(entry.bin)
                buffer.writeInteger(entry.cursor)
            }

        case .getRange(let range):
            try checkBin(range.bin, type, "bin")
            if let to = range.to, range.from > to {
                throw WireError(.invalidValue, "\(type): from \(range.from) is above to \(to)")
            }
            try checkRangeLimit(Int(range.limit), type)
            buffer.writeInteger(range.ruid)
            buffer.writeInteger(range.bin)
            buffer.writeInteger(range.to == nil ? GetRangeFlags.live : GetRangeFlags.hasTo)
            buffer.writeInteger(range.from)
            if let to = range.to { buffer.writeInteger(to) }
            buffer.writeInteger(range.limit)

        case .offeredHashes(let offer):
            try checkCount(offer.addresses.count, 0...ProtocolLimits.offerBatchMax, type, "addresses")
            buffer.writeInteger(offer.ruid)
            buffer.writeInteger(offer.from)
            buffer.writeInteger(offer.lastIndex)
            buffer.writeInteger(UInt16(offer.addresses.count))
            for address in offer.addresses { buffer.writeAddress(address) }

        case .wantedHashes(let wanted):
            try checkCount(wanted.bitvector.count, 0...WireFormat.wantedBitvectorBytesMax, type, "bitvector")
            buffer.writeInteger(wanted.ruid)
            buffer.writeInteger(UInt16(wanted.bitvector.count))
            buffer.writeBytes(wanted.bitvector)

        case .chunkDelivery(let delivery):
            try checkCount(delivery.chunks.count, 1...ProtocolLimits.deliveryChunksMax, type, "chunks")
            for chunk in delivery.chunks { try checkChunk(chunk, type, "chunks[]") }
            buffer.writeInteger(delivery.ruid)
            buffer.writeInteger(UInt16(delivery.chunks.count))
            for chunk in delivery.chunks { buffer.writeChunk(chunk) }

        case .streamError(let error):
            try checkText(error.message, 0...ProtocolLimits.messageTextBytesMax, type, "message")
            buffer.writeInteger(error.ruid)
            buffer.writeInteger(error.code.rawValue)
            buffer.writeText(error.message)

        case .retrieveRequest(let request):
            try checkHops(request.hopsLeft, ProtocolLimits.retrieveHopsMax, type)
            buffer.writeInteger(request.ruid)
            buffer.writeAddress(request.address)
            buffer.writeInteger(request.hopsLeft)

        case .retrieveDelivery(let delivery):
            switch delivery.outcome {
            case .chunk(let chunk):
                try checkChunk(chunk, type, "chunk")
                buffer.writeInteger(delivery.ruid)
                buffer.writeInteger(Outcome.served)
                buffer.writeChunk(chunk)
            case .refused(let refusal):
                try checkText(refusal.message, 0...ProtocolLimits.messageTextBytesMax, type, "refusal.message")
                buffer.writeInteger(delivery.ruid)
                buffer.writeInteger(Outcome.refused)
                buffer.writeRefusal(refusal)
            }

        case .wantHave(let want):
            try checkCount(want.addresses.count, 1...ProtocolLimits.presenceBatchMax, type, "addresses")
            buffer.writeInteger(want.ruid)
            buffer.writeInteger(UInt16(want.addresses.count))
            for address in want.addresses { buffer.writeAddress(address) }

        case .presence(let presence):
            try checkCount(presence.bitvector.count, 1...WireFormat.presenceBitvectorBytesMax, type, "bitvector")
            buffer.writeInteger(presence.ruid)
            buffer.writeInteger(UInt16(presence.bitvector.count))
            buffer.writeBytes(presence.bitvector)

        case .pushChunk(let push):
            try checkHops(push.hopsLeft, ProtocolLimits.pushHopsMax, type)
            try checkChunk(push.chunk, type, "chunk")
            buffer.writeInteger(push.ruid)
            buffer.writeInteger(push.hopsLeft)
            buffer.writeChunk(push.chunk)

        case .receipt(let receipt):
            switch receipt.outcome {
            case .stored(let stored):
                try checkFixed(stored.publicKey, WireFormat.publicKeyBytes, type, "publicKey")
                try checkFixed(stored.signature, WireFormat.signatureBytes, type, "signature")
                buffer.writeInteger(receipt.ruid)
                buffer.writeInteger(Outcome.served)
                buffer.writeAddress(stored.address)
                buffer.writeBytes(stored.publicKey)
                buffer.writeBytes(stored.signature)
            case .refused(let refusal):
                try checkText(refusal.message, 0...ProtocolLimits.messageTextBytesMax, type, "refusal.message")
                buffer.writeInteger(receipt.ruid)
                buffer.writeInteger(Outcome.refused)
                buffer.writeRefusal(refusal)
            }

        case .peersRequest(let request):
            try checkPeersLimit(Int(request.limit), type)
            buffer.writeInteger(request.limit)

        case .peers(let message):
            try checkCount(message.peers.count, 0...ProtocolLimits.hivePeersMax, type, "peers")
            for peer in message.peers {
                try checkListenAddresses(peer.addresses, count: 1...ProtocolLimits.listenAddressesMax, type, "peers[].addresses")
            }
            buffer.writeInteger(UInt16(message.peers.count))
            for peer in message.peers {
                buffer.writeAddress(peer.overlay)
                buffer.writeTexts(peer.addresses)
            }
        }
    }

    static func readPayload(_ reader: inout PayloadReader) throws(WireError) -> Message {
        let type = reader.type
        switch type {
        case .hello:
            let networkID: UInt64 = try reader.readInteger("networkID")
            let publicKey = try reader.readFixedBytes("publicKey", count: WireFormat.publicKeyBytes)
            let overlay = try reader.readAddress("overlay")
            let epoch: UInt64 = try reader.readInteger("epoch")
            let nonce = try reader.readFixedBytes("nonce", count: WireFormat.nonceBytes)
            let listenAddresses = try reader.readListenAddresses("listenAddresses", count: 0...ProtocolLimits.listenAddressesMax)
            let agent = try reader.readText("agent", bytes: 0...ProtocolLimits.agentBytesMax)
            return .hello(Hello(
                networkID: networkID, publicKey: publicKey, overlay: overlay, epoch: epoch, nonce: nonce,
                listenAddresses: listenAddresses, agent: agent))

        case .helloProof:
            return .helloProof(HelloProof(signature: try reader.readFixedBytes("signature", count: WireFormat.signatureBytes)))

        case .ping:
            return .ping(nonce: try reader.readInteger("nonce"))

        case .pong:
            return .pong(nonce: try reader.readInteger("nonce"))

        case .goodbye:
            let raw: UInt16 = try reader.readInteger("reason")
            guard let reason = Goodbye.Reason(rawValue: raw) else {
                throw WireError(.unknownEnumValue, "\(type).reason: unknown value \(raw)")
            }
            let message = try reader.readText("message", bytes: 0...ProtocolLimits.messageTextBytesMax)
            return .goodbye(Goodbye(reason: reason, message: message))

        case .streamInfoRequest:
            let count = try reader.readCount("bins", range: 0...WireFormat.binsMax, elementBytesMin: 1)
            var bins: [UInt8] = []
            bins.reserveCapacity(count)
            for _ in 0..<count { bins.append(try reader.readBin("bins[]")) }
            return .streamInfoRequest(StreamInfoRequest(bins: bins))

        case .streamInfoResponse:
            let epoch: UInt64 = try reader.readInteger("epoch")
            let count = try reader.readCount("cursors", range: 0...WireFormat.binsMax, elementBytesMin: 1 + 8)
            var cursors: [StreamInfoResponse.BinCursor] = []
            cursors.reserveCapacity(count)
            for _ in 0..<count {
                let bin = try reader.readBin("cursors[].bin")
                let cursor: UInt64 = try reader.readInteger("cursors[].cursor")
                cursors.append(.init(bin: bin, cursor: cursor))
            }
            return .streamInfoResponse(StreamInfoResponse(epoch: epoch, cursors: cursors))

        case .getRange:
            let ruid: RequestID = try reader.readInteger("ruid")
            let bin = try reader.readBin("bin")
            let flags: UInt8 = try reader.readInteger("flags")
            guard flags == GetRangeFlags.live || flags == GetRangeFlags.hasTo else {
                throw WireError(.invalidValue, "\(type).flags: \(hex(flags)), only 0x00 (live) or 0x01 (to follows) are defined")
            }
            let from: UInt64 = try reader.readInteger("from")
            var to: UInt64? = nil
            if flags == GetRangeFlags.hasTo {
                let value: UInt64 = try reader.readInteger("to")
                guard from <= value else {
                    throw WireError(.invalidValue, "\(type): from \(from) is above to \(value)")
                }
                to = value
            }
            let limit: UInt16 = try reader.readInteger("limit")
            try checkRangeLimit(Int(limit), type)
            return .getRange(GetRange(ruid: ruid, bin: bin, from: from, to: to, limit: limit))

        case .offeredHashes:
            let ruid: RequestID = try reader.readInteger("ruid")
            let from: UInt64 = try reader.readInteger("from")
            let lastIndex: UInt64 = try reader.readInteger("lastIndex")
            let count = try reader.readCount("addresses", range: 0...ProtocolLimits.offerBatchMax, elementBytesMin: 32)
            var addresses: [ChunkAddress] = []
            addresses.reserveCapacity(count)
            for _ in 0..<count { addresses.append(try reader.readAddress("addresses[]")) }
            return .offeredHashes(OfferedHashes(ruid: ruid, from: from, lastIndex: lastIndex, addresses: addresses))

        case .wantedHashes:
            let ruid: RequestID = try reader.readInteger("ruid")
            let count = try reader.readCount("bitvector", range: 0...WireFormat.wantedBitvectorBytesMax, elementBytesMin: 1)
            let bits = try reader.readFixedBytes("bitvector", count: count)
            return .wantedHashes(WantedHashes(ruid: ruid, bitvector: bits))

        case .chunkDelivery:
            let ruid: RequestID = try reader.readInteger("ruid")
            let count = try reader.readCount(
                "chunks", range: 1...ProtocolLimits.deliveryChunksMax, elementBytesMin: 2 + WireFormat.chunkBytesMin)
            var chunks: [DeliveredChunk] = []
            chunks.reserveCapacity(count)
            for _ in 0..<count { chunks.append(try reader.readChunk("chunks[]")) }
            return .chunkDelivery(ChunkDelivery(ruid: ruid, chunks: chunks))

        case .streamError:
            let ruid: RequestID = try reader.readInteger("ruid")
            let raw: UInt16 = try reader.readInteger("code")
            guard let code = StreamError.Code(rawValue: raw) else {
                throw WireError(.unknownEnumValue, "\(type).code: unknown value \(raw)")
            }
            let message = try reader.readText("message", bytes: 0...ProtocolLimits.messageTextBytesMax)
            return .streamError(StreamError(ruid: ruid, code: code, message: message))

        case .retrieveRequest:
            let ruid: RequestID = try reader.readInteger("ruid")
            let address = try reader.readAddress("address")
            let hopsLeft: UInt8 = try reader.readInteger("hopsLeft")
            try checkHops(hopsLeft, ProtocolLimits.retrieveHopsMax, type)
            return .retrieveRequest(RetrieveRequest(ruid: ruid, address: address, hopsLeft: hopsLeft))

        case .retrieveDelivery:
            let ruid: RequestID = try reader.readInteger("ruid")
            switch try readOutcome(&reader) {
            case Outcome.served:
                return .retrieveDelivery(RetrieveDelivery(ruid: ruid, outcome: .chunk(try reader.readChunk("chunk"))))
            default:
                return .retrieveDelivery(RetrieveDelivery(ruid: ruid, outcome: .refused(try reader.readRefusal())))
            }

        case .wantHave:
            let ruid: RequestID = try reader.readInteger("ruid")
            let count = try reader.readCount("addresses", range: 1...ProtocolLimits.presenceBatchMax, elementBytesMin: 32)
            var addresses: [ChunkAddress] = []
            addresses.reserveCapacity(count)
            for _ in 0..<count { addresses.append(try reader.readAddress("addresses[]")) }
            return .wantHave(WantHave(ruid: ruid, addresses: addresses))

        case .presence:
            let ruid: RequestID = try reader.readInteger("ruid")
            let count = try reader.readCount("bitvector", range: 1...WireFormat.presenceBitvectorBytesMax, elementBytesMin: 1)
            let bits = try reader.readFixedBytes("bitvector", count: count)
            return .presence(Presence(ruid: ruid, bitvector: bits))

        case .pushChunk:
            let ruid: RequestID = try reader.readInteger("ruid")
            let hopsLeft: UInt8 = try reader.readInteger("hopsLeft")
            try checkHops(hopsLeft, ProtocolLimits.pushHopsMax, type)
            return .pushChunk(PushChunk(ruid: ruid, hopsLeft: hopsLeft, chunk: try reader.readChunk("chunk")))

        case .receipt:
            let ruid: RequestID = try reader.readInteger("ruid")
            switch try readOutcome(&reader) {
            case Outcome.served:
                let address = try reader.readAddress("address")
                let publicKey = try reader.readFixedBytes("publicKey", count: WireFormat.publicKeyBytes)
                let signature = try reader.readFixedBytes("signature", count: WireFormat.signatureBytes)
                return .receipt(Receipt(ruid: ruid, outcome: .stored(.init(address: address, publicKey: publicKey, signature: signature))))
            default:
                return .receipt(Receipt(ruid: ruid, outcome: .refused(try reader.readRefusal())))
            }

        case .peersRequest:
            let limit: UInt16 = try reader.readInteger("limit")
            try checkPeersLimit(Int(limit), type)
            return .peersRequest(PeersRequest(limit: limit))

        case .peers:
            let count = try reader.readCount("peers", range: 0...ProtocolLimits.hivePeersMax, elementBytesMin: WireFormat.peerAddressBytesMin)
            var peers: [PeerAddress] = []
            peers.reserveCapacity(count)
            for _ in 0..<count {
                let overlay = try reader.readAddress("peers[].overlay")
                let addresses = try reader.readListenAddresses("peers[].addresses", count: 1...ProtocolLimits.listenAddressesMax)
                peers.append(PeerAddress(overlay: overlay, addresses: addresses))
            }
            return .peers(Peers(peers: peers))
        }
    }

    // MARK: Checks shared by both directions

    private static func checkFixed(_ bytes: [UInt8], _ size: Int, _ type: MessageType, _ field: String) throws(WireError) {
        guard bytes.count == size else {
            throw WireError(.invalidValue, "\(type).\(field): \(bytes.count) bytes, exactly \(size) required")
        }
    }

    private static func checkCount(_ count: Int, _ range: ClosedRange<Int>, _ type: MessageType, _ field: String) throws(WireError) {
        guard range.contains(count) else {
            throw WireError(.countOutOfRange, "\(type).\(field): count \(count) is outside \(range.lowerBound)…\(range.upperBound)")
        }
    }

    private static func checkText(_ text: String, _ range: ClosedRange<Int>, _ type: MessageType, _ field: String) throws(WireError) {
        let length = text.utf8.count
        guard range.contains(length) else {
            throw WireError(.textLengthOutOfRange, "\(type).\(field): length \(length) is outside \(range.lowerBound)…\(range.upperBound)")
        }
    }

    /// A list of "host:port" strings, each 1…`listenAddressBytesMax` bytes. The codec checks
    /// sizes only; what a hive entry's addresses mean is the hive machine's to judge.
    private static func checkListenAddresses(
        _ addresses: [String], count: ClosedRange<Int>, _ type: MessageType, _ field: String
    ) throws(WireError) {
        try checkCount(addresses.count, count, type, field)
        for address in addresses { try checkText(address, 1...WireFormat.listenAddressBytesMax, type, field + "[]") }
    }

    private static func checkPeersLimit(_ limit: Int, _ type: MessageType) throws(WireError) {
        guard (1...ProtocolLimits.hivePeersMax).contains(limit) else {
            throw WireError(.invalidValue, "\(type).limit: \(limit) is outside 1…\(ProtocolLimits.hivePeersMax)")
        }
    }

    /// A chunk travels as `Chunk.serialized`, its payload 1…4096 bytes.
    private static func checkChunk(_ chunk: DeliveredChunk, _ type: MessageType, _ field: String) throws(WireError) {
        guard (1...Chunk.payloadMax).contains(chunk.payload.count) else {
            throw WireError(.invalidChunkSize, "\(type).\(field): payload of \(chunk.payload.count) bytes, 1…\(Chunk.payloadMax) required")
        }
    }

    private static func checkHops(_ hops: UInt8, _ max: Int, _ type: MessageType) throws(WireError) {
        guard Int(hops) <= max else {
            throw WireError(.invalidValue, "\(type).hopsLeft: \(hops) is above \(max)")
        }
    }

    /// The outcome byte of a `retrieveDelivery` or a `receipt`.
    private static func readOutcome(_ reader: inout PayloadReader) throws(WireError) -> UInt8 {
        let outcome: UInt8 = try reader.readInteger("outcome")
        guard outcome == Outcome.served || outcome == Outcome.refused else {
            throw WireError(.invalidValue, "\(reader.type).outcome: \(hex(outcome)), only 0x00 (served) or 0x01 (refused) are defined")
        }
        return outcome
    }

    private static func checkBin(_ bin: UInt8, _ type: MessageType, _ field: String) throws(WireError) {
        guard Int(bin) <= Proximity.maxBin else {
            throw WireError(.invalidBin, "\(type).\(field): bin \(bin) is above \(Proximity.maxBin)")
        }
    }

    private static func checkRangeLimit(_ limit: Int, _ type: MessageType) throws(WireError) {
        guard (1...WireFormat.rangeLimitMax).contains(limit) else {
            throw WireError(.invalidValue, "\(type).limit: \(limit) is outside 1…\(WireFormat.rangeLimitMax)")
        }
    }
}

/// `GetRange.flags`: whether the optional `to` field follows `from`.
enum GetRangeFlags {
    static let live: UInt8 = 0x00
    static let hasTo: UInt8 = 0x01
}

/// The outcome byte of `retrieveDelivery` and `receipt`: what follows it.
enum Outcome {
    /// The chunk (`retrieveDelivery`), or the storer's signed statement (`receipt`).
    static let served: UInt8 = 0x00
    /// A refusal: code and message.
    static let refused: UInt8 = 0x01
}

extension ByteBuffer {
    mutating func writeAddress(_ address: Address32) {
        writeInteger(address.w0)
        writeInteger(address.w1)
        writeInteger(address.w2)
        writeInteger(address.w3)
    }

    /// UInt16 byte length ‖ UTF-8; the caller has checked the length against its limit.
    mutating func writeText(_ text: String) {
        writeInteger(UInt16(text.utf8.count))
        writeString(text)
    }

    /// UInt16 size ‖ `Chunk.serialized` (span little-endian ‖ payload): the bytes the address
    /// is the hash of. The caller has checked the payload's size.
    mutating func writeChunk(_ chunk: DeliveredChunk) {
        writeInteger(UInt16(8 + chunk.payload.count))
        writeInteger(chunk.span, endianness: .little)
        writeBytes(chunk.payload)
    }

    /// Code ‖ message; the caller has checked the message's length.
    mutating func writeRefusal(_ refusal: Refusal) {
        writeInteger(refusal.code.rawValue)
        writeText(refusal.message)
    }

    /// UInt16 count ‖ each string as `writeText`; the caller has checked count and lengths.
    mutating func writeTexts(_ texts: [String]) {
        writeInteger(UInt16(texts.count))
        for text in texts { writeText(text) }
    }
}
