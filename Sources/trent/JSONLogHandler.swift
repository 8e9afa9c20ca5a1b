import Foundation
import JSON
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import Synchronization

/// `log.format: json`: one JSON object per line on standard output (the stream the text format uses), for log
/// shippers. Each line holds `time` (RFC 3339, UTC, milliseconds), `level`, `message`, `logger` and the metadata as
/// string members (request lines: `kms.request.id`, `kms.operation`, `kms.principal`, `kms.error`...). Strings are
/// escaped by the canonical JSON writer, so a message with newlines or control characters stays on its line.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    /// Whole lines from concurrent tasks must not interleave.
    private static let output = Mutex<Void>(())
    /// Members every line has; metadata of the same name is renamed `metadata.<name>` rather than lost or duplicated.
    private static let reserved: Set<String> = ["time", "level", "message", "logger"]

    init(label: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { _, new in new } }
        if let explicit = event.metadata { merged.merge(explicit) { _, new in new } }
        var fields: [String: JSONValue] = [:]
        for (key, value) in merged {
            fields[Self.reserved.contains(key) ? "metadata.\(key)" : key] = Self.json(value)
        }
        // Written by hand so the fixed members come first, for a reader; the rest in the writer's canonical order.
        var line: [UInt8] = Array("{\"time\":".utf8)
        line += JSONValue.string(Self.timestamp()).canonicalBytes
        line += Array(",\"level\":".utf8) + JSONValue.string(event.level.rawValue).canonicalBytes
        line += Array(",\"message\":".utf8) + JSONValue.string(event.message.description).canonicalBytes
        line += Array(",\"logger\":".utf8) + JSONValue.string(label).canonicalBytes
        let rest = JSONValue.object(fields).canonicalBytes
        if rest.count > 2 {
            line.append(UInt8(ascii: ","))
            line += rest.dropFirst().dropLast()
        }
        line += Array("}\n".utf8)
        Self.output.withLock { _ in FileHandle.standardOutput.write(Data(line)) }
    }

    private static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let convertible): .string(convertible.description)
        case .array(let items): .array(items.map(json))
        case .dictionary(let members): .object(members.mapValues(json))
        }
    }

    /// Now, as `2026-12-02T12:30:23.123Z`.
    static func timestamp() -> String {
        let now = Date().timeIntervalSince1970
        var seconds = time_t(now.rounded(.down))
        let milliseconds = min(999, Int((now - now.rounded(.down)) * 1000))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
            Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), milliseconds)
    }
}

/// The process's logging, set up once from `log.format` before the first logger is made.
enum TrentLogging {
    private static let format = Mutex<String?>(nil)

    /// Installs the JSON handler for `json`; `text` keeps swift-log's default stream handler on standard output.
    /// Only the first call has an effect (swift-log allows one bootstrap per process).
    static func bootstrap(format requested: String) {
        format.withLock { current in
            guard current == nil else { return }
            current = requested
            if requested == "json" {
                LoggingSystem.bootstrap { label in JSONLogHandler(label: label) }
            }
        }
    }

    static var isJSON: Bool { format.withLock { $0 == "json" } }

    /// A line that is not a log message (a startup failure) in the configured format: JSON on standard output when
    /// the JSON format is on, else the text line on standard error as before.
    static func writeFailure(_ text: String) {
        if isJSON {
            var logger = Logger(label: "trent")
            logger.logLevel = .critical
            logger.critical("\(text)")
        } else {
            FileHandle.standardError.write(Data("trent: \(text)\n".utf8))
        }
    }
}
