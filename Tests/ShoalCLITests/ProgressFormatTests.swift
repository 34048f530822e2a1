@testable import shoal
import Testing

/// The progress display's pure parts: sizes, rates, durations, the bar, the lines, when to draw.
struct ProgressFormatTests {
    static let byteCounts: [(UInt64, String)] = [
        (0, "0 B"), (1, "1 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536, "1.5 KiB"),
        (10 * 1024 + 512, "10.5 KiB"), (99 * 1024, "99.0 KiB"), (100 * 1024, "100 KiB"),
        (1024 * 1024 - 1, "1.0 MiB"), (1024 * 1024, "1.0 MiB"), (12_900_000, "12.3 MiB"),
        (256 << 20, "256 MiB"), (3 << 30, "3.0 GiB"), (UInt64.max, "16.0 EiB"),
    ]

    @Test(arguments: byteCounts)
    func byteCountsAreShownInBinaryUnits(_ count: UInt64, _ shown: String) {
        #expect(ProgressFormat.bytes(count) == shown)
    }

    @Test func ratesArePerSecondAndNonsenseIsZero() {
        #expect(ProgressFormat.rate(5.1 * 1024 * 1024) == "5.1 MiB/s")
        #expect(ProgressFormat.rate(800) == "800 B/s")
        #expect(ProgressFormat.rate(0) == "0 B/s")
        #expect(ProgressFormat.rate(-3) == "0 B/s")
        #expect(ProgressFormat.rate(.nan) == "0 B/s")
        #expect(ProgressFormat.rate(.infinity) == "0 B/s")
    }

    static let durations: [(Double?, String)] = [
        (0, "0:00"), (0.2, "0:01"), (3, "0:03"), (59.5, "1:00"), (61, "1:01"), (600, "10:00"),
        (3600, "1:00:00"), (3723, "1:02:03"), (98 * 3600, "98:00:00"), (99 * 3600, ">99h"),
        (nil, "--:--"), (-1, "--:--"), (.infinity, "--:--"),
    ]

    @Test(arguments: durations)
    func durationsRoundUpToTheSecond(_ seconds: Double?, _ shown: String) {
        #expect(ProgressFormat.duration(seconds) == shown)
    }

    @Test func percentRoundsDownAndIsHundredOnlyAtTheEnd() {
        #expect(ProgressFormat.percent(bytes: 0, total: 1000) == 0)
        #expect(ProgressFormat.percent(bytes: 999, total: 1000) == 99)
        #expect(ProgressFormat.percent(bytes: 1000, total: 1000) == 100)
        #expect(ProgressFormat.percent(bytes: 0, total: 0) == 100)
        #expect(ProgressFormat.percent(bytes: 5, total: nil) == nil)
    }

    @Test func theEtaIsWhatIsLeftAtTheRate() {
        let state = ProgressState(label: "upload", bytes: 25 << 20, total: 100 << 20, elapsedSeconds: 5, rate: Double(5 << 20))
        #expect(ProgressFormat.eta(state) == 15)
        #expect(ProgressFormat.eta(ProgressState(label: "u", bytes: 1, total: nil, elapsedSeconds: 1, rate: 1)) == nil)
        #expect(ProgressFormat.eta(ProgressState(label: "u", bytes: 1, total: 9, elapsedSeconds: 1, rate: 0)) == nil)
        #expect(ProgressFormat.eta(ProgressState(label: "u", bytes: 9, total: 9, elapsedSeconds: 1, rate: 0.5)) == 0)
    }

    @Test func theBarFillsWithTheFraction() {
        #expect(ProgressFormat.bar(fraction: 0, width: 12) == "[>         ]")
        #expect(ProgressFormat.bar(fraction: 0.5, width: 12) == "[=====>    ]")
        #expect(ProgressFormat.bar(fraction: 0.99, width: 12) == "[=========>]")
        #expect(ProgressFormat.bar(fraction: 1, width: 12) == "[==========]")
        #expect(ProgressFormat.bar(fraction: 7, width: 12) == "[==========]")
        #expect(ProgressFormat.bar(fraction: -1, width: 12) == "[>         ]")
        #expect(ProgressFormat.bar(fraction: .nan, width: 5) == "[>  ]")
    }

    @Test func theTerminalLineHasBarPercentBytesRateAndEtaWithinTheColumns() {
        let state = ProgressState(label: "download", bytes: 45 << 20, total: 100 << 20, elapsedSeconds: 9, rate: Double(5 << 20))
        let line = ProgressFormat.terminalLine(state, columns: 100)
        // A bar of 40 (38 inside): 45% of 38 is 17 filled, then the head, then 20 to go.
        let bar = "[" + String(repeating: "=", count: 17) + ">" + String(repeating: " ", count: 20) + "]"
        #expect(line == "download \(bar)  45% 45.0 MiB / 100 MiB  5.0 MiB/s  ETA 0:11")
        #expect(line.count <= 100)
        // Narrower: the bar shrinks, then goes; the figures stay.
        let narrow = ProgressFormat.terminalLine(state, columns: 70)
        #expect(narrow.count <= 70)
        #expect(narrow.hasSuffix(" 45% 45.0 MiB / 100 MiB  5.0 MiB/s  ETA 0:11"))
        #expect(narrow.contains("["))
        let noBar = ProgressFormat.terminalLine(state, columns: 60)
        #expect(noBar == "download  45% 45.0 MiB / 100 MiB  5.0 MiB/s  ETA 0:11")
        #expect(ProgressFormat.terminalLine(state, columns: 20).count == 20)
    }

    @Test func withoutATotalTheTerminalLineShowsBytesRateAndElapsedTime() {
        let state = ProgressState(label: "upload", bytes: 12_900_000, total: nil, elapsedSeconds: 4.2, rate: 3 * 1024 * 1024)
        #expect(ProgressFormat.terminalLine(state, columns: 80) == "upload 12.3 MiB  3.0 MiB/s  0:05")
    }

    @Test func plainLinesAndTheSummary() {
        let state = ProgressState(label: "upload", bytes: 45 << 20, total: 100 << 20, elapsedSeconds: 9, rate: Double(5 << 20))
        #expect(ProgressFormat.plainLine(state) == "upload: 45.0 MiB of 100 MiB (45%), 5.0 MiB/s, ETA 0:11")
        var unknown = state
        unknown.total = nil
        #expect(ProgressFormat.plainLine(unknown) == "upload: 45.0 MiB, 5.0 MiB/s")
        let done = ProgressState(label: "upload", bytes: 100 << 20, total: 100 << 20, elapsedSeconds: 20, rate: 1)
        #expect(ProgressFormat.plainSummary(done) == "upload: 100 MiB in 0:20 (5.0 MiB/s)")
    }

    @Test func jsonLinesCarryBytesTotalAndRateAndTheLastOneSaysDone() {
        let state = ProgressState(label: "download", bytes: 1000, total: 4000, elapsedSeconds: 2, rate: 499.6)
        #expect(ProgressFormat.jsonLine(state) == #"{"bytes":1000,"total":4000,"rate":500}"#)
        var unknown = state
        unknown.total = nil
        #expect(ProgressFormat.jsonLine(unknown) == #"{"bytes":1000,"total":null,"rate":500}"#)
        let done = ProgressState(label: "download", bytes: 4000, total: 4000, elapsedSeconds: 2.0456, rate: 9)
        #expect(ProgressFormat.jsonLine(done, done: true) == #"{"bytes":4000,"total":4000,"rate":1955,"seconds":2.046,"done":true}"#)
        let instant = ProgressState(label: "download", bytes: 0, total: 0, elapsedSeconds: 0, rate: 0)
        #expect(ProgressFormat.jsonLine(instant, done: true) == #"{"bytes":0,"total":0,"rate":0,"seconds":0.000,"done":true}"#)
    }

    @Test func onATerminalItDrawsAtMostTenTimesASecond() {
        var schedule = ProgressSchedule(kind: .terminal)
        func draws(_ at: Double, _ bytes: UInt64, _ total: UInt64?) -> Bool { schedule.shouldDraw(at: at, bytes: bytes, total: total) }
        #expect(draws(0, 0, 100))
        #expect(!draws(0.05, 50, 100))
        #expect(!draws(0.09, 90, 100))
        #expect(draws(0.1, 95, 100))
        #expect(!draws(0.15, 99, 100))
        let count = (0..<1000).filter { draws(1 + Double($0) / 1000, 100, 100) }.count
        #expect(count == 10, "one second of calls every millisecond draws 10 times")
    }

    @Test func linesComeEverySecondOrEveryTenthOfTheTotal() {
        var schedule = ProgressSchedule(kind: .lines)
        func draws(_ at: Double, _ bytes: UInt64, _ total: UInt64?) -> Bool { schedule.shouldDraw(at: at, bytes: bytes, total: total) }
        #expect(!draws(0.01, 1, 1000), "no line at the very start")
        #expect(!draws(0.5, 99, 1000))
        #expect(draws(0.6, 100, 1000), "a tenth is done")
        #expect(!draws(0.7, 150, 1000))
        #expect(draws(1.7, 160, 1000), "a second since the last line")
        #expect(draws(1.71, 950, 1000), "several tenths at once: one line")
        #expect(!draws(1.72, 960, 1000))
        schedule = ProgressSchedule(kind: .lines)
        #expect(!draws(0.9, 1 << 30, nil), "no total: only the second counts")
        #expect(draws(1.0, 1 << 30, nil))
    }

    @Test func theRateIsOverTheRecentWindow() {
        var meter = RateMeter(windowSeconds: 3)
        #expect(meter.rate == 0)
        // 1 MiB/s for 10 s, then 4 MiB/s for 5 s: the window sees only the recent speed.
        var bytes: UInt64 = 0
        for tick in 1...100 {
            bytes += 1 << 20 / 10
            meter.record(at: Double(tick) / 10, bytes: bytes)
        }
        #expect(abs(meter.rate - Double(1 << 20)) < 0.02 * Double(1 << 20))
        for tick in 101...150 {
            bytes += 4 << 20 / 10
            meter.record(at: Double(tick) / 10, bytes: bytes)
        }
        #expect(abs(meter.rate - Double(4 << 20)) < 0.05 * Double(4 << 20))
    }

    @Test func theRateMeterStaysBoundedAtAnyCallRate() {
        var meter = RateMeter(windowSeconds: 3)
        for i in 1...100_000 { meter.record(at: Double(i) / 100_000, bytes: UInt64(i) * 10) }
        #expect(meter.sampleCount <= RateMeter.samplesMax)
        #expect(abs(meter.rate - 1_000_000) < 1000)
    }
}
