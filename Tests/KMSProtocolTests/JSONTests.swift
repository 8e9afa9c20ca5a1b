import Foundation
import KMS
@testable import KMSProtocol
import Testing
import JSON

/// The one JSON reader (``JSONParser``) and `Codable` over ``JSONValue``, checked against Foundation's
/// `JSONDecoder`/`JSONEncoder`, which they replaced on the request path.
@Suite struct JSONParserTests {
    func parse(_ text: String) throws(JSONSyntaxError) -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

    @Test func readsEveryKindOfValue() throws {
        let value = try parse(#" {"s": "a\"b\\c\/d\n\u00e9\ud83d\udd11", "n": [0, -1, 1.5, 1e3, -2.5E-2], "t": true, "f": false, "z": null, "o": {}, "a": []} "#)
        #expect(value == [
            "s": .string("a\"b\\c/d\né🔑"), "n": [.number(0), .number(-1), .number(1.5), .number(1000), .number(-0.025)],
            "t": true, "f": false, "z": .null, "o": .object([:]), "a": .array([]),
        ])
        #expect(try parse(#"{"k": 1, "k": 2}"#) == ["k": .number(2)], "a repeated name keeps its last value")
    }

    @Test func refusesWhatRFC8259Refuses() {
        let malformed: [(String, String)] = [
            ("", "unexpected end of input"), (#"{"a":1} x"#, "unexpected text after the end of the document"),
            (#"{"a":"#, "unexpected end of input"), (#"{"a" 1}"#, "expected ':'"), (#"{a:1}"#, "expected a member name"),
            (#"[1,]"#, "unexpected character"), (#"[1 2]"#, "expected ',' or ']'"), (#"{"a":1,}"#, "expected a member name"),
            ("01", "unexpected text after the end of the document"), ("1.", "invalid number"), ("-", "invalid number"),
            ("1e", "invalid number"), ("NaN", "unexpected character"), ("1e400", "number out of range"),
            (#""\x""#, "invalid escape sequence"), (#""\u12""#, #"invalid \u escape"#), (#""\ud800""#, #"unpaired surrogate in a \u escape"#),
            (#""\udc00""#, #"unpaired surrogate in a \u escape"#), ("\"a\u{1}\"", "unescaped control character in a string"),
            (#""abc"#, "unterminated string"), ("tru", "unexpected character"),
        ]
        for (text, reason) in malformed {
            #expect(throws: JSONSyntaxError.self, "\(text)") { try parse(text) }
            do { _ = try parse(text) } catch { #expect(error.reason == reason, "\(text)") }
        }
        #expect { try JSONValue.parse([0x22, 0xFF, 0xFE, 0x22]) } throws: { ($0 as? JSONSyntaxError)?.reason == "a string is not valid UTF-8" }
    }

    @Test func limitsNesting() throws {
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect { try parse(deep) } throws: { ($0 as? JSONSyntaxError)?.reason == "nesting deeper than 64 levels" }
        _ = try parse(String(repeating: "[", count: 64) + String(repeating: "]", count: 64))
        // A megabyte of brackets is refused, not a stack overflow.
        #expect(throws: JSONSyntaxError.self) { try JSONValue.parse(Array(repeating: UInt8(ascii: "["), count: 1 << 20)) }
    }

    @Test func canonicalBytesReadBackAsTheSameValue() throws {
        let value: JSONValue = [
            "text": "tab\tquote\"slash/ctl\u{1}é🔑", "numbers": [.number(0), .number(-1.5), .number(1e20), .number(1_700_000_000.123)],
            "nested": ["deeper": [.null, true, false, .object([:])]],
        ]
        #expect(try JSONValue.parse(value.canonicalBytes) == value)
    }
}

@Suite struct JSONValueCodingTests {
    struct Shape: Codable, Equatable {
        struct Inner: Codable, Equatable {
            var Name: String
            var Values: [Int]?
        }
        var KeyId: String?
        var NumberOfBytes: Int?
        var ValidTo: Double?
        var DryRun: Bool?
        var EncryptionContext: [String: String]?
        var GrantTokens: [String]?
        var Constraints: Inner?
        var Items: [Inner]?
    }

    static let bodies = [
        "{}",
        #"{"KeyId": "alias/x", "NumberOfBytes": 32, "ValidTo": 1700000000.5, "DryRun": false, "Unknown": [1, {"a": null}]}"#,
        #"{"EncryptionContext": {"Department": "10", "é": "🔑"}, "GrantTokens": ["a", "b"], "KeyId": null}"#,
        #"{"Constraints": {"Name": "n", "Values": [1, -2, 3e2]}, "Items": [{"Name": "a"}, {"Name": "b", "Values": []}]}"#,
    ]

    @Test func decodesAsJSONDecoderDoes() throws {
        for body in Self.bodies {
            let expected = try JSONDecoder().decode(Shape.self, from: Data(body.utf8))
            #expect(try JSONValueCoding.decode(Shape.self, from: JSONValue.parse(Array(body.utf8))) == expected, "\(body)")
        }
    }

    @Test func refusesWhatJSONDecoderRefuses() throws {
        let wrong = [
            #"{"KeyId": 5}"#, #"{"NumberOfBytes": "32"}"#, #"{"NumberOfBytes": 1.5}"#, #"{"NumberOfBytes": 1e30}"#, #"{"DryRun": 1}"#,
            #"{"EncryptionContext": {"a": 1}}"#, #"{"GrantTokens": "a"}"#, #"{"Constraints": {"Values": [1]}}"#,
            #"{"Constraints": {"Name": null}}"#, #"{"Items": [{"Name": "a"}, 5]}"#, #"{"EncryptionContext": []}"#,
        ]
        for body in wrong {
            #expect(throws: DecodingError.self, "\(body)") { _ = try JSONDecoder().decode(Shape.self, from: Data(body.utf8)) }
            #expect(throws: DecodingError.self, "\(body)") { _ = try JSONValueCoding.decode(Shape.self, from: JSONValue.parse(Array(body.utf8))) }
        }
        // The message names the member, as before.
        #expect {
            _ = try AWSJSON.decode(Shape.self, from: Array(#"{"Constraints": {"Name": "n", "Values": ["x"]}}"#.utf8))
        } throws: { error in
            (error as? KMSError)?.message == "Unexpected JSON type at 'Constraints.Values.[0]': expected a number."
        }
    }

    struct Response: Encodable {
        var CiphertextBlob: Blob
        var KeyId: String
        var CreationDate: Date
        var DeletionDate: Date?
        var Count: Int
        var Enabled: Bool
        var Tags: [WireTag]
        var Context: [String: String]
    }

    @Test func encodesAsJSONEncoderDoes() throws {
        let response = Response(
            CiphertextBlob: Blob([0, 1, 2, 255]), KeyId: "arn:aws:kms:us-east-1:111122223333:key/abc", CreationDate: Date(timeIntervalSince1970: 1_700_000_000.25),
            DeletionDate: nil, Count: 3, Enabled: true, Tags: [WireTag(Tag(key: "k", value: "v"))], Context: ["a": "b"])
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .secondsSince1970
        let expected = try JSONValue.parse(Array(encoder.encode(response)))
        let encoded = try JSONValueCoding.encode(response)
        #expect(encoded == expected)
        #expect(try JSONValue.parse(encoded.canonicalBytes) == expected)
        #expect(encoded["DeletionDate"] == nil, "nil members are left out")
    }
}

@Suite struct CanonicalRecordTests {
    @Test func theObjectWriterWritesWhatCanonicalBytesWould() {
        var writer = CanonicalObjectWriter()
        writer.member("a", string: "x\"y")
        writer.member("b", nil as JSONValue?)
        writer.member("c", ["z": .number(1), "y": [true, .null]])
        #expect(writer.bytes == JSONValue.object(["a": "x\"y", "c": ["z": .number(1), "y": [true, .null]]]).canonicalBytes)
        var broken = CanonicalObjectWriter()
        broken.member("n", .number(.nan))
        #expect(broken.bytes == Array("null".utf8))
    }

    /// Every member in sorted order and canonical form: the bytes read back and serialised again are identical.
    @Test func aCloudTrailRecordIsCanonical() throws {
        let caller = Caller(
            accountID: "111122223333", principalARN: "arn:aws:iam::111122223333:user/alice", principalKind: .user,
            accessKeyID: "AKIAEXAMPLE", sourceIP: "127.0.0.1", userAgent: "boto3", viaService: "rds.amazonaws.com")
        let request = try JSONValue.parse(Array(#"{"KeyId": "alias/x", "EncryptionContext": {"Zeta": "1", "alpha": "2"}, "Plaintext": "c2VjcmV0"}"#.utf8))
        for (error, caller) in [(nil, caller), (KMSError(.notFound, "Key 'x' does not exist"), caller), (nil, nil)] as [(KMSError?, Caller?)] {
            let record = CloudTrailRecord(
                operation: "Encrypt", requestID: "r", eventID: "e", eventTime: Date(timeIntervalSince1970: 1_800_000_000), region: "us-east-1",
                caller: caller, claimedAccessKeyID: caller == nil ? "AKIACLAIMED" : nil, sourceIP: "127.0.0.1", userAgent: "boto3",
                request: request, response: ["KeyId": "arn", "CiphertextBlob": "secret"], error: error, resources: [])
            let bytes = record.canonicalBytes
            let parsed = try JSONValue.parse(bytes)
            #expect(parsed.canonicalBytes == bytes, "\(String(decoding: bytes, as: UTF8.self))")
            #expect(parsed["requestParameters"] == ["keyId": "alias/x", "encryptionContext": ["Zeta": "1", "alpha": "2"]], "no plaintext")
            #expect(parsed["responseElements"] == .null, "Encrypt's response is left out")
            #expect(parsed["errorCode"] == error.map { .string($0.code.rawValue) })
            #expect(parsed["userIdentity"]?["userName"] == (caller == nil ? nil : "alice"))
        }
    }
}
