import ShoalCore

/// A shell whose pure machine has timers. While the machine names a next deadline, one task
/// sleeps until it — or `tickStepMs`, whichever comes first, since an event may bring an
/// earlier deadline meanwhile — and lets the machine tick; it ends when no deadline is left.
/// `startTicking()` after each event starts that task if none runs.
protocol DeadlineTicking: Actor {
    /// The longest sleep between looks at the deadline.
    static var tickStepMs: UInt64 { get }
    var clock: any ShoalClock { get }
    /// Whether the ticking task runs (only `startTicking` and the task change it).
    var ticking: Bool { get set }
    /// The machine's next deadline, if any.
    var machineDeadline: UInt64? { get }
    /// Runs the machine's `tick(now:)` and carries out its actions.
    func tick(now: UInt64) async
}

extension DeadlineTicking {
    func startTicking() {
        guard !ticking, machineDeadline != nil else { return }
        ticking = true
        Task { await self.tickWhileDue() }
    }

    private func tickWhileDue() async {
        while let deadline = machineDeadline {
            try? await clock.sleep(untilMs: min(deadline, clock.nowMs() + Self.tickStepMs))
            await tick(now: clock.nowMs())
        }
        // The check above and this run in one turn of the actor: no deadline slips between.
        ticking = false
    }
}
