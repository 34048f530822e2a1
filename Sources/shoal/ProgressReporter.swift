import ArgumentParser

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `--progress`: how a transfer shows its progress on stderr.
enum ProgressMode: String, CaseIterable, ExpressibleByArgument, Sendable {
    /// A redrawn bar when stderr is a terminal, plain lines otherwise.
    case auto
    /// A line every second or every tenth of the total.
    case plain
    /// One JSON object per line, at the plain lines' pace, and a final one.
    case json
    /// Nothing.
    case none
}

/// Draws a transfer's progress on stderr as `ProgressFormat` says, when `ProgressSchedule`
/// says. Called from the transfer loop itself (the client is blocking), so it draws only when
/// bytes move; a stall shows as a bar that stops, then the client's timeout.
final class ProgressReporter {
    private enum Style { case terminal, plain, json, none }

    private let style: Style
    private let label: String
    private let unit: ProgressUnit
    private var total: UInt64?
    private let started = ContinuousClock.now
    private var schedule: ProgressSchedule
    private var meter = RateMeter()
    private var bytes: UInt64 = 0
    /// Whether a bar is on screen (so an error message starts on a fresh line).
    private var barShown = false

    init(mode: ProgressMode, label: String, total: UInt64?, unit: ProgressUnit = .bytes) {
        switch mode {
        case .auto: style = isatty(2) == 1 ? .terminal : .plain
        case .plain: style = .plain
        case .json: style = .json
        case .none: style = .none
        }
        self.label = label
        self.total = total
        self.unit = unit
        schedule = ProgressSchedule(kind: style == .terminal ? .terminal : .lines)
    }

    private var elapsed: Double {
        let d = ContinuousClock.now - started
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    private func state(at time: Double) -> ProgressState {
        ProgressState(label: label, bytes: bytes, total: total, elapsedSeconds: time, rate: meter.rate, unit: unit)
    }

    /// The transfer has moved `bytes` in all, of `total` now (a node's download knows its total
    /// only once it answers).
    func update(_ bytes: UInt64, total: UInt64?) {
        self.total = total
        update(bytes)
    }

    /// A line of its own between progress lines ("fetch: download … of 123 chunks"), in the
    /// styles that draw for people (not json, not none).
    func note(_ line: String) {
        switch style {
        case .terminal:
            if barShown { Terminal.errRaw("\r\u{1B}[K") }
            Terminal.err(line)
            barShown = false
        case .plain: Terminal.err(line)
        case .json, .none: break
        }
    }

    /// The transfer has moved `bytes` in all.
    func update(_ bytes: UInt64) {
        guard style != .none else { return }
        self.bytes = bytes
        let now = elapsed
        meter.record(at: now, bytes: bytes)
        guard schedule.shouldDraw(at: now, bytes: bytes, total: total) else { return }
        draw(state(at: now))
    }

    private func draw(_ state: ProgressState) {
        switch style {
        case .terminal:
            Terminal.errRaw("\r" + ProgressFormat.terminalLine(state, columns: ProgressReporter.columns() - 1) + "\u{1B}[K")
            barShown = true
        case .plain:
            Terminal.err(ProgressFormat.plainLine(state))
        case .json:
            Terminal.err(ProgressFormat.jsonLine(state))
        case .none:
            break
        }
    }

    /// The transfer is complete: the bar at its end and a newline, or the summary line.
    func finish() {
        let final = state(at: elapsed)
        switch style {
        case .terminal:
            var shown = final
            shown.rate = ProgressFormat.averageRate(final)
            Terminal.errRaw("\r" + ProgressFormat.terminalLine(shown, columns: ProgressReporter.columns() - 1) + "\u{1B}[K\n")
            barShown = false
        case .plain:
            Terminal.err(ProgressFormat.plainSummary(final))
        case .json:
            Terminal.err(ProgressFormat.jsonLine(final, done: true))
        case .none:
            break
        }
    }

    /// The transfer failed: ends the bar's line so the error message stands on its own.
    func abandon() {
        if barShown { Terminal.errRaw("\n") }
        barShown = false
    }

    /// The terminal's width on stderr, 80 when it does not say.
    private static func columns() -> Int {
        var size = winsize()
        #if canImport(Glibc)
        let request = UInt(TIOCGWINSZ)
        #else
        let request = TIOCGWINSZ
        #endif
        if ioctl(2, request, &size) == 0, size.ws_col >= 20 { return Int(size.ws_col) }
        return 80
    }
}
