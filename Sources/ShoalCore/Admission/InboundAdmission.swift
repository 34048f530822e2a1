/// Where an inbound connection comes from, as admission counts it: the remote IP and the
/// network it belongs to (IPv4 /24, IPv6 /64), so one host or one small network cannot take
/// every slot by itself.
public struct RemoteHost: Hashable, Sendable, CustomStringConvertible {
    /// The IP address in text form ("127.0.0.1", "::1").
    public var address: String
    /// The network, e.g. "127.0.0.0/24" or "2001:db8:0:1::/64".
    public var subnet: String

    public init(address: String, subnet: String) {
        self.address = address
        self.subnet = subnet
    }

    public var description: String { address }
}

/// Bounds on inbound connections: every one is checked as a connection is accepted, before
/// TLS starts, and a connection over any of them is closed at once. Outbound connections are
/// not counted here, so an inbound flood cannot take the slots the node dials with.
public struct InboundLimits: Sendable, Equatable {
    /// Inbound connections in total: in their handshake or established.
    public var inboundMax = 256
    /// Inbound connections from one IP address.
    public var perAddressMax = 16
    /// Inbound connections from one IPv4 /24 or IPv6 /64.
    public var perSubnetMax = 48
    /// Inbound connections still in their TLS and hello handshake.
    public var handshakesMax = 64
    /// Offences (failed handshakes, connections dropped for a protocol fault) an address may
    /// commit within `offenceWindowMs` before it is refused for `penaltyMs`.
    public var offencesMax = 16
    public var offenceWindowMs: UInt64 = 10_000
    public var penaltyMs: UInt64 = 60_000
    /// Addresses whose offences are remembered; the least recently seen is forgotten first.
    public var offendersTrackedMax = 4096

    public init() {}

    /// Why a set of limits cannot work, or nil.
    public var problem: String? {
        if inboundMax < 1 || perAddressMax < 1 || perSubnetMax < 1 || handshakesMax < 1 {
            return "inbound limits must be at least 1 (inbound \(inboundMax), per address \(perAddressMax), per subnet \(perSubnetMax), handshakes \(handshakesMax))"
        }
        if offencesMax < 1 || offenceWindowMs < 1 || offendersTrackedMax < 1 {
            return "offence limits must be at least 1"
        }
        return nil
    }
}

/// Admission of inbound connections: counts per address, per subnet, in total and in the
/// handshake, and a penalty box for addresses that keep failing. Performs no I/O; time comes
/// in as milliseconds of a monotonic clock.
///
/// Each admitted connection is one `Slot`: `admit` takes it, `handshakeEnded` moves it from
/// handshaking to established (or releases it), `connectionEnded` releases it. The shell
/// must end every admitted slot exactly once.
public struct InboundAdmission: Sendable {
    public enum Refusal: String, Sendable, CaseIterable, Codable {
        /// The listener is closing.
        case closed
        case tooManyHandshakes
        case tooManyInbound
        case tooManyFromAddress
        case tooManyFromSubnet
        /// The address committed too many offences lately.
        case penalized
    }

    public enum Decision: Equatable, Sendable {
        case admitted(Slot)
        case refused(Refusal)
    }

    /// One admitted connection.
    public struct Slot: Hashable, Sendable {
        public let id: UInt64
        public let host: RemoteHost
    }

    /// What admission has done since it started, for `/status`.
    public struct Counters: Sendable, Equatable, Codable {
        public var admitted = 0
        public var refused: [String: Int] = [:]
        /// Offences recorded, and times an address was put in the penalty box.
        public var offences = 0
        public var penalties = 0
    }

    /// What is open now, for `/status`.
    public struct Occupancy: Sendable, Equatable, Codable {
        public var inbound: Int
        public var handshaking: Int
        public var addresses: Int
        public var subnets: Int
        public var penalized: Int

        public init(inbound: Int, handshaking: Int, addresses: Int, subnets: Int, penalized: Int) {
            self.inbound = inbound
            self.handshaking = handshaking
            self.addresses = addresses
            self.subnets = subnets
            self.penalized = penalized
        }
    }

    private struct Offender {
        /// Offences within the current window, and when that window started.
        var offences: Int
        var windowStartMs: UInt64
        var penalizedUntilMs: UInt64
        var lastSeenMs: UInt64
    }

    public let limits: InboundLimits
    public private(set) var counters = Counters()
    public private(set) var closed = false
    private var nextID: UInt64 = 1
    private var handshaking: Set<Slot> = []
    private var established: Set<Slot> = []
    private var perAddress: [String: Int] = [:]
    private var perSubnet: [String: Int] = [:]
    private var offenders: [String: Offender] = [:]

    public init(limits: InboundLimits) {
        self.limits = limits
    }

    public func occupancy(nowMs: UInt64) -> Occupancy {
        Occupancy(inbound: handshaking.count + established.count, handshaking: handshaking.count,
                  addresses: perAddress.count, subnets: perSubnet.count,
                  penalized: offenders.values.count(where: { $0.penalizedUntilMs > nowMs }))
    }

    /// A connection from `host` was accepted: admit it (as handshaking) or refuse it.
    public mutating func admit(_ host: RemoteHost, nowMs: UInt64) -> Decision {
        let decision = decide(host, nowMs: nowMs)
        switch decision {
        case .admitted(let slot):
            counters.admitted += 1
            handshaking.insert(slot)
            perAddress[host.address, default: 0] += 1
            perSubnet[host.subnet, default: 0] += 1
        case .refused(let refusal):
            counters.refused[refusal.rawValue, default: 0] += 1
        }
        return decision
    }

    private mutating func decide(_ host: RemoteHost, nowMs: UInt64) -> Decision {
        if closed { return .refused(.closed) }
        if var offender = offenders[host.address], offender.penalizedUntilMs > 0 {
            if nowMs < offender.penalizedUntilMs { return .refused(.penalized) }
            offender.penalizedUntilMs = 0
            offender.offences = 0
            offender.windowStartMs = nowMs
            offenders[host.address] = offender
        }
        if handshaking.count >= limits.handshakesMax { return .refused(.tooManyHandshakes) }
        if handshaking.count + established.count >= limits.inboundMax { return .refused(.tooManyInbound) }
        if perAddress[host.address, default: 0] >= limits.perAddressMax { return .refused(.tooManyFromAddress) }
        if perSubnet[host.subnet, default: 0] >= limits.perSubnetMax { return .refused(.tooManyFromSubnet) }
        defer { nextID += 1 }
        return .admitted(Slot(id: nextID, host: host))
    }

    /// The handshake of `slot` ended: established (the slot stays taken until
    /// `connectionEnded`) or failed (the slot is released). Returns false for a slot that is
    /// not handshaking (already ended, or released by `close`).
    @discardableResult
    public mutating func handshakeEnded(_ slot: Slot, established succeeded: Bool) -> Bool {
        guard handshaking.remove(slot) != nil else { return false }
        if succeeded {
            established.insert(slot)
        } else {
            release(slot.host)
        }
        return true
    }

    /// An established connection closed.
    public mutating func connectionEnded(_ slot: Slot) {
        guard established.remove(slot) != nil else { return }
        release(slot.host)
    }

    private mutating func release(_ host: RemoteHost) {
        perAddress[host.address, default: 1] -= 1
        if perAddress[host.address] == 0 { perAddress[host.address] = nil }
        perSubnet[host.subnet, default: 1] -= 1
        if perSubnet[host.subnet] == 0 { perSubnet[host.subnet] = nil }
    }

    /// `host` failed a handshake or broke the protocol. Returns true when this offence puts it
    /// in the penalty box (later connections from it are refused until the penalty ends).
    @discardableResult
    public mutating func offence(_ host: RemoteHost, nowMs: UInt64) -> Bool {
        counters.offences += 1
        var offender = offenders[host.address]
            ?? Offender(offences: 0, windowStartMs: nowMs, penalizedUntilMs: 0, lastSeenMs: nowMs)
        offender.lastSeenMs = nowMs
        if offender.penalizedUntilMs > nowMs {
            offenders[host.address] = offender
            return false
        }
        if nowMs - offender.windowStartMs > limits.offenceWindowMs {
            offender.offences = 0
            offender.windowStartMs = nowMs
        }
        offender.offences += 1
        var penalized = false
        if offender.offences >= limits.offencesMax {
            offender.penalizedUntilMs = nowMs + limits.penaltyMs
            counters.penalties += 1
            penalized = true
        }
        offenders[host.address] = offender
        if offenders.count > limits.offendersTrackedMax { forgetOffenders(nowMs: nowMs) }
        return penalized
    }

    /// Whether `host` is in the penalty box at `nowMs`.
    public func isPenalized(_ host: RemoteHost, nowMs: UInt64) -> Bool {
        (offenders[host.address]?.penalizedUntilMs ?? 0) > nowMs
    }

    /// Keeps the offender table within `offendersTrackedMax`: first those whose window and
    /// penalty are over, then the least recently seen.
    private mutating func forgetOffenders(nowMs: UInt64) {
        offenders = offenders.filter { _, o in
            o.penalizedUntilMs > nowMs || nowMs - o.windowStartMs <= limits.offenceWindowMs
        }
        let excess = offenders.count - limits.offendersTrackedMax
        guard excess > 0 else { return }
        for (address, _) in offenders.sorted(by: { $0.value.lastSeenMs < $1.value.lastSeenMs }).prefix(excess) {
            offenders[address] = nil
        }
    }

    /// Refuses everything from now on; returns the slots still in their handshake (the shell
    /// closes them). Established slots stay until `connectionEnded`.
    public mutating func close() -> [Slot] {
        closed = true
        let open = Array(handshaking)
        for slot in open {
            handshaking.remove(slot)
            release(slot.host)
        }
        return open
    }

    /// The counts agree with the slots, and every bound holds.
    public func checkInvariants() {
        let slots = handshaking.union(established)
        precondition(handshaking.isDisjoint(with: established), "a slot both handshaking and established")
        var addresses: [String: Int] = [:]
        var subnets: [String: Int] = [:]
        for slot in slots {
            addresses[slot.host.address, default: 0] += 1
            subnets[slot.host.subnet, default: 0] += 1
        }
        precondition(addresses == perAddress, "per-address counts \(perAddress) disagree with the slots \(addresses)")
        precondition(subnets == perSubnet, "per-subnet counts \(perSubnet) disagree with the slots \(subnets)")
        precondition(handshaking.count <= limits.handshakesMax, "\(handshaking.count) handshakes over \(limits.handshakesMax)")
        precondition(slots.count <= limits.inboundMax, "\(slots.count) inbound over \(limits.inboundMax)")
        precondition(perAddress.values.allSatisfy { $0 <= limits.perAddressMax }, "an address over \(limits.perAddressMax)")
        precondition(perSubnet.values.allSatisfy { $0 <= limits.perSubnetMax }, "a subnet over \(limits.perSubnetMax)")
        precondition(offenders.count <= limits.offendersTrackedMax, "\(offenders.count) offenders tracked")
    }
}
