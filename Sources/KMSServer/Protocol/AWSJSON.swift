public import Foundation
public import KMS

/// AWS JSON 1.1 wire rules: bodies are JSON objects, blobs are base64 strings, timestamps are epoch seconds.
/// Malformed JSON and wrong JSON types are `SerializationException`; a missing required member is a
/// `ValidationException` naming it, as AWS words them.
enum AWSJSON {
    static let contentType = "application/x-amz-json-1.1"

    static func decode<Request: Decodable>(_ type: Request.Type, from body: [UInt8]) throws -> Request {
        let data = body.isEmpty ? Data("{}".utf8) : Data(body)
        do {
            guard try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) is [String: Any] else {
                throw KMSError(.serialization, "The request body must be a JSON object.")
            }
        } catch let error as KMSError {
            throw error
        } catch {
            throw KMSError(.serialization, "The request body is not valid JSON.")
        }
        do {
            return try JSONDecoder().decode(Request.self, from: data)
        } catch let error as KMSError {
            throw error
        } catch let error as DecodingError {
            throw KMSError(.serialization, describe(error))
        }
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

    static func encode<Response: Encodable>(_ response: Response) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        return Array(try encoder.encode(response))
    }

    /// The body of an error response: `{"__type": ..., "message": ...}`.
    static func errorBody(_ error: KMSError) -> [UInt8] {
        (try? encode(["__type": error.code.rawValue, "message": error.message])) ?? Array(#"{"__type":"KMSInternalException"}"#.utf8)
    }
}

/// A base64-encoded blob member. Invalid base64 is a `SerializationException`.
struct Blob: Codable, Sendable {
    var bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let data = Data(base64Encoded: text) else {
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
