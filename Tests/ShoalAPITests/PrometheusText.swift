import Foundation

/// A strict reader of the Prometheus text exposition format (0.0.4), for the tests: every line
/// is `# HELP name text`, `# TYPE name type`, another comment, or `name{label="value",…} value`.
struct PrometheusText {
    struct Sample: Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    struct ParseError: Error, CustomStringConvertible {
        var line: Int
        var text: String
        var reason: String
        var description: String { "line \(line) (\(reason)): \(text)" }
    }

    var samples: [Sample] = []
    /// `# TYPE` of each family.
    var types: [String: String] = [:]
    var help: [String: String] = [:]

    init(_ text: String) throws {
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                try comment(String(line), number)
            } else {
                samples.append(try PrometheusText.sample(String(line), number))
            }
        }
    }

    private mutating func comment(_ line: String, _ number: Int) throws {
        let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
        guard parts.count >= 3, parts[1] == "HELP" || parts[1] == "TYPE" else { return }
        guard PrometheusText.isMetricName(parts[2]) else {
            throw ParseError(line: number, text: line, reason: "bad metric name in \(parts[1])")
        }
        if parts[1] == "TYPE" {
            let type = parts.count == 4 ? parts[3] : ""
            guard ["counter", "gauge", "histogram", "summary", "untyped"].contains(type) else {
                throw ParseError(line: number, text: line, reason: "unknown type")
            }
            guard types[parts[2]] == nil else { throw ParseError(line: number, text: line, reason: "second TYPE line") }
            types[parts[2]] = type
        } else {
            help[parts[2]] = parts.count == 4 ? parts[3] : ""
        }
    }

    static func isMetricName(_ name: String) -> Bool {
        name.wholeMatch(of: /[a-zA-Z_:][a-zA-Z0-9_:]*/) != nil
    }

    private static func sample(_ line: String, _ number: Int) throws -> Sample {
        func fail(_ reason: String) -> ParseError { ParseError(line: number, text: line, reason: reason) }
        var rest = Substring(line)
        let name = String(rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" })
        guard isMetricName(name) else { throw fail("bad metric name") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let key = String(rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" })
                guard !key.isEmpty, key.first?.isNumber == false else { throw fail("bad label name") }
                rest = rest.dropFirst(key.count)
                guard rest.hasPrefix("=\"") else { throw fail("label \(key) has no =\"") }
                rest = rest.dropFirst(2)
                var value = ""
                while true {
                    guard let c = rest.first else { throw fail("unterminated label value") }
                    rest = rest.dropFirst()
                    if c == "\"" { break }
                    if c == "\\" {
                        guard let escaped = rest.first else { throw fail("dangling escape") }
                        rest = rest.dropFirst()
                        switch escaped {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: throw fail("bad escape \\\(escaped)")
                        }
                    } else {
                        value.append(c)
                    }
                }
                guard labels[key] == nil else { throw fail("label \(key) twice") }
                labels[key] = value
                if rest.first == "," { rest = rest.dropFirst() }
                else if rest.first != "}" { throw fail("expected , or } after a label") }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " " else { throw fail("no space before the value") }
        let fields = rest.dropFirst().split(separator: " ")
        guard (1...2).contains(fields.count) else { throw fail("expected a value and an optional timestamp") }
        let text = String(fields[0])
        let value: Double
        switch text {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let number = Double(text) else { throw fail("value is not a number") }
            value = number
        }
        if fields.count == 2, Int64(fields[1]) == nil { throw fail("timestamp is not an integer") }
        return Sample(name: name, labels: labels, value: value)
    }

    /// The value of the one sample named `name` with exactly `labels`, or nil.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }

    /// Family names: sample names without the histogram suffixes of a histogram's family.
    var families: Set<String> {
        Set(samples.map { sample in
            for suffix in ["_bucket", "_sum", "_count"] where sample.name.hasSuffix(suffix) {
                let base = String(sample.name.dropLast(suffix.count))
                if types[base] == "histogram" { return base }
            }
            return sample.name
        })
    }
}
