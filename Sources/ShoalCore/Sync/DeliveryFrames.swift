extension ChunkDelivery {
    /// The frames that answer a want: the chunks still stored in `ChunkDelivery` messages of at
    /// most `deliveryChunksMax`, then, if some offered chunks are gone, a `rangeEvicted` error
    /// (the client retries the range).
    public static func frames(ruid: RequestID, present: [DeliveredChunk], wanted: Int) -> [Message] {
        var messages: [Message] = []
        let frame = ProtocolLimits.deliveryChunksMax
        for start in stride(from: 0, to: present.count, by: frame) {
            messages.append(.chunkDelivery(ChunkDelivery(ruid: ruid, chunks: Array(present[start..<min(start + frame, present.count)]))))
        }
        if present.count < wanted {
            messages.append(.streamError(StreamError(ruid: ruid, code: .rangeEvicted,
                                                     message: "\(wanted - present.count) offered chunks are no longer stored")))
        }
        return messages
    }
}
