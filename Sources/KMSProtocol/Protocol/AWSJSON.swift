import Foundation
import KMS
import JSON

/// AWS JSON 1.1 wire rules: bodies are JSON objects, blobs are base64 strings, timestamps are epoch seconds.
/// Malformed JSON and wrong JSON types are `SerializationException`; a missing required member is a
/// `ValidationException` naming it, as AWS words them.
enum AWSJSON {
    static let contentType = "application/x-amz-json-1.1"

    /// A request body, parsed once: empty means `{}`; anything but a JSON object is a `SerializationException`.
    static func parseBody(_ body: [UInt8]) throws -> JSONValue {
        guard !body.isEmpty else { return .object([:]) }
        let json: JSONValue
        do {
            json = try JSONValue.parse(body)
        } catch {
            throw KMSError(.serialization, "The request body is not valid JSON: \(error).")
        }
        guard case .object = json else { throw KMSError(.serialization, "The request body must be a JSON object.") }
        return json
    }

    /// The operation's input from a parsed body; wrong JSON types are a `SerializationException` naming the member.
    static func decode<Request: Decodable>(_ type: Request.Type, from json: JSONValue) throws -> Request {
        do {
            return try JSONValueCoding.decode(Request.self, from: json)
        } catch let error as DecodingError {
            throw KMSError(.serialization, describe(error))
        }
    }

    static func decode<Request: Decodable>(_ type: Request.Type, from body: [UInt8]) throws -> Request {
        try decode(type, from: parseBody(body))
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .typeMismatch(let type, let context):
            return "Unexpected JSON type at '\(path(context))': expected \(wireName(of: type))."
        case .valueNotFound(let type, let context):
            return "Unexpected null at '\(path(context))': expected \(wireName(of: type))."
        case .dataCorrupted(let context):
            return "Cannot read the value at '\(path(context))': \(context.debugDescription)"
        case .keyNotFound(let key, _):
            return "Missing member '\(key.stringValue)'."
        @unknown default:
            return "The request body could not be read."
        }
    }

    private static func wireName(of type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type, is Double.Type: "a number"
        case is Bool.Type: "a boolean"
        case is [Any].Type: "a list"
        default: "an object"
        }
    }

    /// The body of an error response: `{"__type": ..., "message": ...}`. An empty message is left out, as AWS
    /// leaves it out (InvalidCiphertextException, KMSInvalidSignatureException, KMSInvalidMacException carry none).
    static func errorBody(_ error: KMSError) -> [UInt8] {
        var body: [String: JSONValue] = ["__type": .string(error.code.rawValue)]
        if !error.message.isEmpty { body["message"] = .string(error.message) }
        return JSONValue.object(body).canonicalBytes
    }
}

/// A base64-encoded blob member. Anything but canonical base64 (RFC 4648, padded, no other characters, unused bits
/// zero: the only form that encodes back to itself) is a `SerializationException`, so one blob has one spelling.
struct Blob: Codable, Sendable {
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        // Foundation's decoder on Linux accepts extra padding ("====" is one zero byte): the round trip refuses it.
        guard text.utf8.count % 4 == 0, let data = Data(base64Encoded: text), data.base64EncodedString() == text else {
            let member = decoder.codingPath.last?.stringValue ?? "blob"
            throw KMSError(.serialization, "Member '\(member)' is not valid base64.")
        }
        bytes = Array(data)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Data(bytes).base64EncodedString())
    }
}

/// Returns a required member or the ValidationException AWS sends when it is missing.
func required<T>(_ value: T?, _ member: String) throws -> T {
    guard let value else {
        let wireName = member.prefix(1).lowercased() + member.dropFirst()
        throw KMSError(.validation, "1 validation error detected: Value null at '\(wireName)' failed to satisfy constraint: Member must not be null")
    }
    return value
}

/// The wire form of a tag.
struct WireTag: Codable, Sendable {
    var TagKey: String?
    var TagValue: String?

    init(_ tag: Tag) {
        TagKey = tag.key
        TagValue = tag.value
    }

    func domain() throws -> Tag {
        Tag(key: try required(TagKey, "TagKey"), value: try required(TagValue, "TagValue"))
    }
}

/// An operation without output: AWS answers an empty body.
struct NoOutput: Encodable, Sendable {}
