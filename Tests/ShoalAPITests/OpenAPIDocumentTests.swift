import Foundation
import Hummingbird
import ShoalAPI
import Testing

/// `Docs/openapi.yaml` and the router agree: every route served is documented, and every
/// operation documented is served.
struct OpenAPIDocumentTests {
    static let documentPath = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Docs/openapi.yaml").path

    /// `(METHOD, /path/{param})` of each operation under `paths:`, read line by line: a path is
    /// a key at indent 2 starting with `/`, an operation a method key at indent 4.
    static func documentedOperations() throws -> Set<String> {
        let text = try String(contentsOfFile: documentPath, encoding: .utf8)
        var inPaths = false
        var path: String?
        var out = Set<String>()
        let methods = ["get", "head", "post", "put", "delete", "patch", "options"]
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "paths:" { inPaths = true; continue }
            guard inPaths else { continue }
            if let first = line.first, first != " " { break }  // the next top-level key
            if line.hasPrefix("  /"), !line.hasPrefix("   "), line.hasSuffix(":") {
                path = String(line.dropFirst(2).dropLast())
            } else if line.hasPrefix("    "), !line.hasPrefix("     "), let path {
                let key = line.dropFirst(4).prefix { $0 != ":" }
                if methods.contains(String(key)) { out.insert("\(key.uppercased()) \(path)") }
            }
        }
        return out
    }

    @Test func everyRouteIsDocumentedAndEveryDocumentedRouteIsServed() async throws {
        let routes = try await withTestNode { node in
            Set(makeRouter(node: node).routes.map { route -> String in
                // `:name` captures are `{name}` in OpenAPI.
                let path = route.path.description.split(separator: "/", omittingEmptySubsequences: false).map { part in
                    part.hasPrefix(":") ? "{\(part.dropFirst())}" : String(part)
                }.joined(separator: "/")
                return "\(route.method.rawValue) \(path.isEmpty ? "/" : path)"
            })
        }
        // The router answers HEAD wherever it answers GET (`autoGenerateHeadEndpoints`).
        let served = routes.union(routes.filter { $0.hasPrefix("GET ") }.map { "HEAD " + $0.dropFirst(4) })
        let documented = try Self.documentedOperations()
        #expect(served.count > 15, "the router lists its routes: \(served.sorted())")
        #expect(served.subtracting(documented).sorted() == [], "served but not in Docs/openapi.yaml")
        #expect(documented.subtracting(served).sorted() == [], "in Docs/openapi.yaml but not served")
    }

    @Test(.enabled(if: OpenAPIDocumentTests.validatorAvailable, "python3 with PyYAML and openapi-spec-validator is not installed"))
    func theDocumentIsValidOpenAPI() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import sys, yaml; from openapi_spec_validator import validate; "
                             + "validate(yaml.safe_load(open(sys.argv[1])))", Self.documentPath]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        process.waitUntilExit()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(message.suffix(2000))")
    }

    static let validatorAvailable: Bool = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import yaml, openapi_spec_validator"]
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }()
}
