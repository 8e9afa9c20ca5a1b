import Foundation
import KMS
import Testing
import JSON

/// The hand-written canonical serialisation is byte for byte what JSONEncoder wrote before it, so trails written
/// by earlier versions still verify.
@Suite struct CanonicalJSONTests {
    static let strings = [
        "", "plain", "with \"quotes\" and \\ backslash", "slash / stays", "tab\tnew\nline\r", "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f}",
        "é ü 漢字 🔑", "\u{2028}\u{2029}", "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    ]
    static let numbers: [Double] = [0, -0.0, 1, -1, 1.5, 0.1, 1e20, 1e-7, 123456789012, 2.5e300, Double(Int32.max), 1_700_000_000.123]

    @Test func matchesJSONEncoder() {
        var object: [String: JSONValue] = [:]
        for (index, text) in Self.strings.enumerated() {
            object[text] = .string(text)
            object["n\(index)"] = .number(Self.numbers[index % Self.numbers.count])
        }
        object["array"] = .array(Self.numbers.map(JSONValue.number) + [.null, .bool(true), .bool(false), .object([:]), .array([])])
        object["B"] = .object(["z": "1", "a": "2", "É": "3", "e": "4", "_": .null])
        let value = JSONValue.object(object)
        #expect(value.canonicalBytes == value.canonicalBytesViaEncoder, "\(String(decoding: value.canonicalBytes, as: UTF8.self))\nvs\n\(String(decoding: value.canonicalBytesViaEncoder, as: UTF8.self))")
        for number in Self.numbers {
            #expect(JSONValue.number(number).canonicalBytes == JSONValue.number(number).canonicalBytesViaEncoder, "\(number)")
        }
        #expect(JSONValue.number(.nan).canonicalBytes == Array("null".utf8))
        #expect(JSONValue.array([.number(.infinity)]).canonicalBytes == Array("null".utf8))
    }
}
