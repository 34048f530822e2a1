/// The supervisor's decisions about pull-sync subscriptions. Pure: given the table and the
/// storage radius, it works out the bins each connected peer should give us, compares them
/// with what is subscribed, and returns the difference for the shell to carry out and journal.
public struct SubscriptionReconciler: Sendable {
    /// Bins subscribed per connected peer, as of the last reconciliation; each list ascending
    /// and never empty. A connected peer that gives nothing (under a radius that keeps nothing,
    /// `SubscriptionPlan.keepsNothing`) has no entry. At most one entry per connected peer, so
    /// bounded as the table's connections are.
    public private(set) var current: [OverlayAddress: [UInt8]] = [:]
    /// The depth and radius the last reconciliation planned with (0 before the first).
    public private(set) var depth = 0
    public private(set) var radius = 0

    public init() {}

    /// Plans every connected peer's bins from `topology.depth` and `radius`, and returns how
    /// that differs from `current`, which it then becomes. A peer no longer connected has all
    /// its bins cancelled (reason `disconnected`). See `Reconciliation.Change.Reason` for why a
    /// change gets which reason. The radius counts from 0 to `SubscriptionPlan.keepsNothing`.
    public mutating func reconcile(topology: Topology, radius: Int) -> Reconciliation {
        typealias Reason = Reconciliation.Change.Reason
        let newDepth = topology.depth
        let newRadius = min(max(radius, 0), SubscriptionPlan.keepsNothing)
        let connected = topology.connected
        var changes: [Reconciliation.Change] = []
        var next: [OverlayAddress: [UInt8]] = [:]
        for peer in connected {
            let peerBin = topology.bin(of: peer)
            let desired = SubscriptionPlan.bins(peerBin: peerBin, depth: newDepth, radius: newRadius)
            if !desired.isEmpty { next[peer] = desired }
            let neighbourhood = SubscriptionPlan.givesNeighbourhood(peerBin: peerBin, depth: newDepth, radius: newRadius)
            let old = current[peer] ?? []
            guard old != desired else { continue }
            guard !old.isEmpty, !desired.isEmpty else {
                // All or nothing: a new peer, or the radius came to keep nothing or stopped doing so.
                let radiusMoved = (self.radius >= SubscriptionPlan.keepsNothing) != (newRadius >= SubscriptionPlan.keepsNothing)
                let reason = radiusMoved ? Reason.radiusChanged : neighbourhood ? Reason.neighbour : Reason.binEqualsPO
                changes.append(.init(peer: peer, peerBin: peerBin, subscribe: desired, cancel: old, reason: reason))
                continue
            }
            let wasNeighbourhood = SubscriptionPlan.givesNeighbourhood(peerBin: peerBin, depth: depth, radius: self.radius)
            let reason: String
            switch (wasNeighbourhood, neighbourhood) {
            case (false, true): reason = Reason.neighbour
            case (true, false) where peerBin < newDepth: reason = Reason.leftNeighbourhood
            case (true, false): reason = Reason.radiusChanged
            default: reason = newDepth != depth ? Reason.depthChanged : Reason.radiusChanged
            }
            changes.append(.init(peer: peer, peerBin: peerBin, subscribe: Self.sortedDifference(desired, old),
                                 cancel: Self.sortedDifference(old, desired), reason: reason))
        }
        for (peer, old) in current where !topology.isConnected(peer) {
            changes.append(.init(peer: peer, peerBin: topology.bin(of: peer), subscribe: [], cancel: old,
                                 reason: Reason.disconnected))
        }
        changes.sort { $0.peer < $1.peer }
        let result = Reconciliation(oldDepth: depth, newDepth: newDepth, oldRadius: self.radius, newRadius: newRadius,
                                    connected: connected.count, changes: changes)
        current = next
        depth = newDepth
        self.radius = newRadius
        return result
    }

    /// The elements of `a` not in `b`; both ascending, and so is the result.
    private static func sortedDifference(_ a: [UInt8], _ b: [UInt8]) -> [UInt8] {
        let drop = Set(b)
        return a.filter { !drop.contains($0) }
    }

    public func checkInvariants() {
        precondition((0...Proximity.maxBin).contains(depth) && (0...SubscriptionPlan.keepsNothing).contains(radius),
                     "depth \(depth), radius \(radius)")
        for (peer, bins) in current {
            precondition(!bins.isEmpty && zip(bins, bins.dropFirst()).allSatisfy { $0 < $1 }
                         && bins.allSatisfy { Int($0) < Proximity.binCount }, "bins of \(peer): \(bins)")
        }
    }
}

/// What one reconciliation changed: the depth and radius before and after, and per peer the
/// bins to subscribe and to cancel.
public struct Reconciliation: Sendable, Equatable {
    public var oldDepth: Int, newDepth: Int, oldRadius: Int, newRadius: Int
    /// Connected peers after it.
    public var connected: Int
    /// At most one per peer, ascending by overlay.
    public var changes: [Change]

    public struct Change: Sendable, Equatable {
        public var peer: OverlayAddress
        public var peerBin: Int
        /// Bins to open streams for, and bins whose streams end; both ascending.
        public var subscribe: [UInt8]
        public var cancel: [UInt8]
        /// One of `Reason`'s values.
        public var reason: String

        public init(peer: OverlayAddress, peerBin: Int, subscribe: [UInt8], cancel: [UInt8], reason: String) {
            (self.peer, self.peerBin, self.subscribe, self.cancel, self.reason) = (peer, peerBin, subscribe, cancel, reason)
        }

        /// Why a peer's bins change.
        public enum Reason {
            /// A newly connected peer, or one that now gives the neighbourhood's bins (its PO
            /// reached depth and radius).
            public static let neighbour = "neighbour"
            /// A newly connected peer below depth or radius: only its bin equal to its PO.
            public static let binEqualsPO = "bin-equals-po"
            /// Depth rose past the peer's PO: back to its own bin alone.
            public static let leftNeighbourhood = "left-neighbourhood"
            /// Still in the same role, but depth moved, so the neighbourhood's bins did.
            public static let depthChanged = "depth-changed"
            /// The radius moved: which bins we keep changed (or a neighbour fell below it, or
            /// it came to keep nothing: a light node).
            public static let radiusChanged = "radius-changed"
            /// The peer is gone: every bin it gave is cancelled.
            public static let disconnected = "disconnected"
        }
    }

    public init(oldDepth: Int, newDepth: Int, oldRadius: Int, newRadius: Int, connected: Int, changes: [Change]) {
        (self.oldDepth, self.newDepth, self.oldRadius, self.newRadius) = (oldDepth, newDepth, oldRadius, newRadius)
        self.connected = connected
        self.changes = changes
    }

    /// Nothing to do and nothing to journal.
    public var isEmpty: Bool { changes.isEmpty && oldDepth == newDepth && oldRadius == newRadius }

    /// The journal's account of it (none when empty): a `reconcile` line, then per change in
    /// overlay order a `disconnect` line for a peer that is gone, or a `subscribe` and/or a
    /// `cancel` line. See `JournalLine` for the format.
    public var journalLines: [String] {
        guard !isEmpty else { return [] }
        var lines = [JournalLine("reconcile", ["depth": "\(oldDepth)->\(newDepth)", "radius": "\(oldRadius)->\(newRadius)",
                                               "connected": "\(connected)"]).text]
        for change in changes {
            let gone = change.reason == Change.Reason.disconnected
            for (event, bins) in gone ? [("disconnect", change.cancel)] : [("subscribe", change.subscribe), ("cancel", change.cancel)]
            where !bins.isEmpty {
                lines.append(JournalLine(event, ["peer": JournalLine.peerToken(change.peer), "po": "\(change.peerBin)",
                                                 "bins": JournalLine.binList(bins), "reason": change.reason]).text)
            }
        }
        return lines
    }
}
