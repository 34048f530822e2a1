/// The fast paths: shards in caller-owned memory, nothing copied or allocated per call beyond
/// a stack array of k + m addresses. The array API is built on the same kernel.
extension ReedSolomon {
    /// Encodes k data shards laid out back to back in `data` (k · shardSize bytes) into m
    /// parity shards back to back in `parity` (m · shardSize bytes).
    public func encode(shardSize: Int, data: UnsafeRawBufferPointer, parity: UnsafeMutableRawBufferPointer) throws(ErasureError) {
        try checkShardSize(shardSize)
        try checkBuffer("data", data.count, shards: dataShards, shardSize: shardSize)
        try checkBuffer("parity", parity.count, shards: parityShards, shardSize: shardSize)
        guard parityShards > 0, shardSize > 0, let input = data.baseAddress, let output = parity.baseAddress else { return }
        runKernel(
            code.encodeTables, sourceCount: dataShards, outputs: parityShards, length: shardSize,
            source: { input + $0 * shardSize }, output: { output + $0 * shardSize })
    }

    /// Encodes from k data shard addresses into m parity shard addresses, `shardSize` bytes each.
    public func encode(
        shardSize: Int, data: UnsafeBufferPointer<UnsafeRawPointer>, parity: UnsafeBufferPointer<UnsafeMutableRawPointer>
    ) throws(ErasureError) {
        try checkShardSize(shardSize)
        guard data.count == dataShards, parity.count == parityShards else {
            throw .invalidParameters(
                "expected \(dataShards) data and \(parityShards) parity addresses, got \(data.count) and \(parity.count)")
        }
        guard parityShards > 0, shardSize > 0 else { return }
        runKernel(
            code.encodeTables, sourceCount: dataShards, outputs: parityShards, length: shardSize,
            source: { data[$0] }, output: { parity[$0] })
    }

    /// Rebuilds, in place, the lost data shards of k + m shards laid out back to back in
    /// `shards` ((k + m) · shardSize bytes). `present[i]` says whether shard i holds its bytes;
    /// the slots of lost data shards receive them. Lost parity slots are left as they are.
    /// Returns the indices of the data shards rebuilt.
    @discardableResult
    public func reconstructData(shardSize: Int, shards: UnsafeMutableRawBufferPointer, present: [Bool]) throws(ErasureError) -> [Int] {
        try checkShardSize(shardSize)
        try checkBuffer("shards", shards.count, shards: totalShards, shardSize: shardSize)
        let plan = try plan(present)
        guard !plan.lost.isEmpty, shardSize > 0, let base = shards.baseAddress else { return plan.lost }
        runKernel(
            plan.tables, sourceCount: dataShards, outputs: plan.lost.count, length: shardSize,
            source: { UnsafeRawPointer(base + plan.survivors[$0] * shardSize) },
            output: { base + plan.lost[$0] * shardSize })
        return plan.lost
    }

    /// Rebuilds, in place, the lost data shards among k + m shard addresses (`shardSize` bytes
    /// each). `present[i]` says whether shard i holds its bytes; the addresses of lost data
    /// shards receive them. Returns the indices of the data shards rebuilt.
    @discardableResult
    public func reconstructData(
        shardSize: Int, shards: UnsafeBufferPointer<UnsafeMutableRawPointer>, present: [Bool]
    ) throws(ErasureError) -> [Int] {
        try checkShardSize(shardSize)
        guard shards.count == totalShards else {
            throw .invalidParameters("expected \(totalShards) shard addresses, got \(shards.count)")
        }
        let plan = try plan(present)
        guard !plan.lost.isEmpty, shardSize > 0 else { return plan.lost }
        runKernel(
            plan.tables, sourceCount: dataShards, outputs: plan.lost.count, length: shardSize,
            source: { UnsafeRawPointer(shards[plan.survivors[$0]]) }, output: { shards[plan.lost[$0]] })
        return plan.lost
    }

    private func plan(_ present: [Bool]) throws(ErasureError) -> DecodePlan {
        guard present.count == totalShards else {
            throw .invalidParameters("expected \(totalShards) presence flags, got \(present.count)")
        }
        var set = ShardSet()
        for (index, here) in present.enumerated() where here { set.insert(index) }
        return try CodingCache.plan(for: code, present: set)
    }

    private func checkBuffer(_ what: String, _ count: Int, shards: Int, shardSize: Int) throws(ErasureError) {
        let (expected, overflow) = shards.multipliedReportingOverflow(by: shardSize)
        guard !overflow, count == expected else {
            throw .shardSize("\(what) buffer has \(count) bytes, expected \(shards) × \(shardSize)")
        }
    }
}
