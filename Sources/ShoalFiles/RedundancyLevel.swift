/// How much Reed–Solomon parity a file's tree carries: per intermediate chunk, `dataShards`
/// references to data children and `parityShards` references to parity chunks (Swarm's splits
/// of 128 references).
public enum RedundancyLevel: UInt8, Sendable, CaseIterable, Codable {
    case none = 0, medium, strong, insane, paranoid

    /// Data references of a full intermediate: 128, 119, 107, 97, 37. This is the branching
    /// factor of the tree at this level.
    public var dataShards: Int {
        switch self {
        case .none: 128
        case .medium: 119
        case .strong: 107
        case .insane: 97
        case .paranoid: 37
        }
    }

    /// Parity references of a full intermediate: 0, 9, 21, 31, 89.
    public var parityShards: Int { 128 - dataShards }

    /// "none" "medium" "strong" "insane" "paranoid", or "0" … "4".
    public init?(name: String) {
        if let raw = UInt8(name), let level = RedundancyLevel(rawValue: raw) {
            self = level
            return
        }
        guard let level = RedundancyLevel.allCases.first(where: { "\($0)" == name.lowercased() }) else { return nil }
        self = level
    }

    /// The parity references of an intermediate with `dataCount` data references: the full
    /// level's share, `ceil(dataCount × parityShards / dataShards)`, and at least 1 (0 at level
    /// none). A full intermediate gets exactly `parityShards`. The count grows with `dataCount`,
    /// so `dataCount + parityCount` names `dataCount` (see `dataCount(referenceCount:)`).
    public func parityCount(dataCount: Int) -> Int {
        guard self != .none, dataCount > 0 else { return 0 }
        return max(1, (dataCount * parityShards + dataShards - 1) / dataShards)
    }

    /// The data references of an intermediate holding `referenceCount` references in all;
    /// nil when no data count gives that total.
    public func dataCount(referenceCount: Int) -> Int? {
        guard referenceCount >= 1, referenceCount <= TreeShape.referencesMax else { return nil }
        // Totals grow strictly with the data count, so at most one data count fits; ≤ 128 tries.
        for n in stride(from: min(referenceCount, dataShards), through: 1, by: -1)
        where n + parityCount(dataCount: n) == referenceCount {
            return n
        }
        return nil
    }
}
