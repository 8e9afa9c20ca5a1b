import Foundation
@testable import JSON
@testable import KMS
@testable import KMSProtocol

enum JSONTargets {
    /// The one JSON reader (request bodies, policies, audit lines) and the canonical writer.
    ///
    /// Properties: parsing never traps; what parses writes canonical bytes that parse back to an equal value and
    /// write the same bytes again (the audit chain hashes them); the policy grammar's tree (ordered members,
    /// duplicates refused, numbers kept as text) accepts no document the value tree refuses for its syntax.
    static let json = FuzzTarget(name: "json", maximumLength: 4096, summary: "JSONParser, JSONValue.canonicalBytes round trip") { bytes in
        let value: JSONValue
        do throws(JSONSyntaxError) {
            value = try JSONValue.parse(bytes)
        } catch {
            // A document that is not JSON is not JSON in the policy grammar either (same reader, smaller depth).
            if (try? JSONParser.parse(bytes, as: PolicyJSON.self, maximumDepth: 32, refusingDuplicateNames: true)) != nil {
                // Only numbers the value tree cannot hold (it keeps Doubles; the policy tree keeps the text).
                check(error.reason == "number out of range", "the policy reader accepts what JSONValue refuses: \(error)")
            }
            return
        }
        let canonical = value.canonicalBytes
        let again: JSONValue
        do {
            again = try JSONValue.parse(canonical)
        } catch {
            fatalError("canonical bytes do not parse (\(error)): \(String(decoding: canonical, as: UTF8.self))")
        }
        check(again == value, "parse(canonicalBytes) differs from the value: \(String(decoding: canonical, as: UTF8.self))")
        check(again.canonicalBytes == canonical, "canonicalBytes is not stable across a round trip")

        // A request body: an object, or a SerializationException.
        do {
            let body = try AWSJSON.parseBody(bytes)
            check(body == value, "parseBody and JSONValue.parse disagree")
        } catch {
            checkKMSError(error, "AWSJSON.parseBody")
            if case .object = value { check(false, "parseBody refused an object: \(error)") }
        }

        // The same document as the policy grammar reads it.
        _ = try? JSONParser.parse(bytes, as: PolicyJSON.self, maximumDepth: 32, refusingDuplicateNames: true)
    }

    /// Every operation's decoding of a request body into its typed input (AWSJSON.decode through JSONValueCoding),
    /// without a service. Properties: no trap, and every refusal is a KMSError (a SerializationException), never
    /// another error that the handler would answer with a 500.
    static let operations = FuzzTarget(name: "operations", maximumLength: 4096, summary: "every operation's input decoding (AWSJSON, JSONValueCoding)") { bytes in
        let json: JSONValue
        do {
            json = try AWSJSON.parseBody(bytes)
        } catch {
            checkKMSError(error, "AWSJSON.parseBody")
            return
        }
        for (name, decode) in OperationInputs.decoders {
            do {
                try decode(json)
            } catch {
                checkKMSError(error, "decoding the input of \(name)")
            }
        }
    }

    /// The replayer's check that the decoder table names operations of the API, each once.
    static func checkOperationTable() {
        let names = OperationInputs.decoders.map(\.name)
        check(Set(names).count == names.count, "OperationInputs names an operation twice")
        let api = Set(KeyManagementService.allOperationNames)
        for name in names { check(api.contains(name), "OperationInputs names \(name), which is not an operation of the API") }
    }
}
