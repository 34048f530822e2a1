import Locking
import NIOCore
import ShoalCore
import ShoalNode
import ShoalWire
import Synchronization

/// A connected peer that holds nothing and wants nothing, and answers the node as an honest
/// peer with an empty store would, so that the node keeps it connected and has nothing to do.
///
/// - stream-info requests: the cursors of an empty store (0 for every bin asked), under the
///   epoch the peer's hello announced, so the node finds no history to sync;
/// - live range requests (no end): held, then answered after `liveIdleMs` with the empty
///   offer a node's sync server sends when nothing arrived (`lastIndex` = `from` − 1);
/// - history range requests (cannot come after cursors of 0): `rangeEvicted`;
/// - pings: pongs (the node pings a silent peer after 5 s and drops it after 30 s).
/// Other messages are counted and ignored (a message type this client does not know yet must
/// not end the measurement).
enum IdlePeer {
    /// The epoch the clients' hellos announce.
    static let epoch: UInt64 = 1
    /// Live requests held at once per client; beyond that they are answered at once.
    static let heldRequestsMax = 1024
    /// Replies queued for the writer per client; more would mean the node floods us.
    static let repliesQueuedMax = 4096

    /// What one client saw and did.
    struct Tally: Sendable {
        var pings = 0
        var streamInfos = 0
        var liveRanges = 0
        var historyRanges = 0
        var other = 0
        /// The node ended the connection (a goodbye, or it closed) before we did.
        var closedByNode = false
        var goodbye: String?

        mutating func merge(_ other: Tally) {
            pings += other.pings
            streamInfos += other.streamInfos
            liveRanges += other.liveRanges
            historyRanges += other.historyRanges
            self.other += other.other
            if other.closedByNode { closedByNode = true }
            goodbye = goodbye ?? other.goodbye
        }
    }

    /// Set once: every client closes its connection.
    final class Stop: Sendable {
        private let flag = Atomic<Bool>(false)
        var requested: Bool { flag.load(ordering: .acquiring) }
        func request() { flag.store(true, ordering: .releasing) }
    }

    /// Serves `connection` until `stop` is requested or the node ends it.
    static func serve(_ connection: EstablishedConnection, liveIdleMs: Int, stop: Stop) async -> Tally {
        let channel = connection.channel.channel
        let started = ContinuousClock.now
        let clock = { @Sendable in Int((ContinuousClock.now - started) / .milliseconds(1)) }
        let outcome = try? await connection.channel.executeThenClose { inbound, outbound -> Tally in
            let (replies, sink) = AsyncStream.makeStream(of: Message.self, bufferingPolicy: .bufferingOldest(repliesQueuedMax))
            /// Empty offers for live requests, each with the moment it is due (ms since start).
            let held = Locked<[(dueMs: Int, reply: Message)]>([])
            return await withTaskGroup(of: Tally?.self) { group -> Tally in
                group.addTask {
                    var tally = Tally()
                    do {
                        for try await message in inbound {
                            switch message {
                            case .ping(let nonce):
                                tally.pings += 1
                                sink.yield(.pong(nonce: nonce))
                            case .streamInfoRequest(let request):
                                tally.streamInfos += 1
                                sink.yield(.streamInfoResponse(StreamInfoResponse(
                                    epoch: epoch, cursors: request.bins.map { .init(bin: $0, cursor: 0) })))
                            case .getRange(let request) where request.to == nil:
                                tally.liveRanges += 1
                                let empty = Message.offeredHashes(OfferedHashes(ruid: request.ruid, from: request.from,
                                                                                lastIndex: request.from - 1, addresses: []))
                                let queued = held.withLock { held in
                                    guard held.count < heldRequestsMax else { return false }
                                    held.append((clock() + liveIdleMs, empty))
                                    return true
                                }
                                if !queued { sink.yield(empty) }
                            case .getRange(let request):
                                tally.historyRanges += 1
                                sink.yield(.streamError(StreamError(ruid: request.ruid, code: .rangeEvicted, message: "nothing stored")))
                            case .goodbye(let goodbye):
                                tally.goodbye = "\(goodbye.reason)"
                            default:
                                tally.other += 1
                            }
                        }
                    } catch {}
                    tally.closedByNode = !stop.requested
                    sink.finish()
                    return tally
                }
                group.addTask {
                    for await reply in replies {
                        do { try await outbound.write(reply) } catch { break }
                    }
                    return nil
                }
                group.addTask {
                    // Held live requests fall due; the stop request is noticed here too.
                    while !stop.requested && !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(100))
                        let now = clock()
                        let due = held.withLock { held in
                            let due = held.filter { $0.dueMs <= now }.map(\.reply)
                            held.removeAll { $0.dueMs <= now }
                            return due
                        }
                        for reply in due { sink.yield(reply) }
                    }
                    channel.close(promise: nil)
                    return nil
                }
                var tally = Tally()
                // The reader ends first (the node closed, or the stop closed the channel).
                while let result = await group.next() {
                    if let result {
                        tally = result
                        break
                    }
                }
                channel.close(promise: nil)
                group.cancelAll()
                return tally
            }
        }
        return outcome ?? Tally(closedByNode: !stop.requested)
    }
}
