import Foundation
@testable import JSON
@testable import KMS
@testable import KMSAudit
@testable import KMSProtocol

/// The CloudTrail record of a request (what the audit trail stores and hashes), from arbitrary bodies and
/// client-chosen strings.
///
/// Input: a flag byte (caller kind, via service, error, resources, source IP), then the operation name, the
/// user agent, the error message and the claimed access key id, each ending at `\n`; the rest is the request
/// body, also used as the response.
///
/// Properties: no trap; the record is JSON in canonical form (parsing and writing it again gives the same
/// bytes, so the verifier recomputes the hash the writer made), and so is its audit line; only allowlisted
/// request and response members appear, renamed lowerCamelCase; client-chosen strings are bounded, and a
/// request that failed authentication makes a small record whatever its body.
enum CloudTrailTarget {
    static let target = FuzzTarget(name: "cloudtrail", maximumLength: 4096, summary: "CloudTrailRecord from arbitrary request bodies") { bytes in
        run(bytes)
    }

    static let allowedRequestNames = Set(CloudTrailRecord.requestMembers.map(CloudTrailRecord.lowerCamel))

    static func run(_ bytes: [UInt8]) {
        var reader = FuzzReader(bytes)
        let flags = reader.byte()
        let operation = reader.string(separator: 0x0A)
        let userAgent = reader.string(separator: 0x0A)
        let message = reader.string(separator: 0x0A)
        let claimed = reader.string(separator: 0x0A)
        let body: JSONValue? = try? AWSJSON.parseBody(reader.remaining)

        let kinds: [Principal.Kind?] = [nil, .user, .role, .service]
        let caller = kinds[Int(flags & 0x03)].map { kind in
            Caller(
                accountID: kind == .service ? "" : "111122223333",
                principalARN: kind == .service ? "rds.us-east-1.amazonaws.com" : "arn:aws:iam::111122223333:user/\(claimed)", principalKind: kind,
                accessKeyID: "AKIDEXAMPLE", sourceIP: "192.0.2.10", userAgent: userAgent,
                viaService: flags & 0x04 != 0 && kind != .service ? "rds.us-east-1.amazonaws.com" : nil)
        }
        let error = flags & 0x08 != 0 ? KMSError(.validation, message) : nil
        let resources = flags & 0x10 != 0 ? [AuditResources.Resource(arn: "arn:aws:kms:us-east-1:111122223333:key/\(claimed)", accountID: "111122223333")] : []
        let record = CloudTrailRecord(
            operation: operation, requestID: "7b3e5c1a-0000-4000-8000-000000000001", eventID: "7b3e5c1a-0000-4000-8000-000000000002",
            eventTime: Date(timeIntervalSince1970: 1_795_448_546), region: "us-east-1", caller: caller,
            claimedAccessKeyID: caller == nil ? claimed : nil, sourceIP: flags & 0x20 != 0 ? "2001:db8::1" : nil, userAgent: userAgent,
            // As the handler does: an unauthenticated request's parameters are not recorded.
            request: caller == nil ? JSONValue?.none : body, response: error == nil ? body : JSONValue?.none, error: error, resources: resources)

        let canonical = record.canonicalBytes
        guard let members = AuditFormat.parse(canonical) else {
            fatalError("a CloudTrail record is not a JSON object: \(String(decoding: canonical, as: UTF8.self))")
        }
        check(JSONValue.object(members).canonicalBytes == canonical, "a CloudTrail record is not in canonical form")
        func length(_ value: JSONValue?) -> Int { AuditFormat.string(value)?.utf8.count ?? 0 }
        let limit = CloudTrailRecord.boundedMemberBytes
        check(length(members["eventName"]) <= limit, "eventName is not bounded")
        check(length(members["userAgent"]) <= limit, "userAgent is not bounded")
        check(length(members["errorMessage"]) <= 4 * limit, "errorMessage is not bounded")
        if case .object(let identity)? = members["userIdentity"], caller == nil {
            check(length(identity["accessKeyId"]) <= limit, "the claimed access key is not bounded")
        }
        if case .object(let parameters)? = members["requestParameters"] {
            check(caller != nil, "an unauthenticated request's parameters were recorded")
            for name in parameters.keys { check(allowedRequestNames.contains(name), "request member \(name.debugDescription) reached the trail") }
        }
        if case .object(let elements)? = members["responseElements"] {
            let allowed = Set(CloudTrailRecord.responseMembers(of: operation).map(CloudTrailRecord.lowerCamel))
            for name in elements.keys { check(allowed.contains(name), "response member \(name.debugDescription) reached the trail") }
        }
        if caller == nil {
            // Bounded strings (at most 6 bytes each once escaped) and fixed members: small, whatever was sent.
            check(canonical.count <= 16 * 1024, "an unauthenticated request made a record of \(canonical.count) bytes")
        }

        // The record inside its audit line, as the trail writes it and the verifier reads it back.
        let hash = AuditFormat.chainHash(previousHash: AuditFormat.zeroHash, recordBytes: canonical, key: nil)
        let line = AuditFormat.recordLine(sequence: 1, previousHash: AuditFormat.zeroHash, hash: hash, recordBytes: canonical)
        check(line.last == AuditFormat.newline && !line.dropLast().contains(AuditFormat.newline), "an audit line holds a newline")
        guard let parsedLine = AuditFormat.parse(line.dropLast()), let recorded = parsedLine["record"] else {
            fatalError("an audit line does not parse: \(String(decoding: line, as: UTF8.self))")
        }
        check(AuditFormat.chainHash(previousHash: AuditFormat.zeroHash, recordBytes: recorded.canonicalBytes, key: nil) == hash, "the verifier would recompute another hash")
        check(JSONValue.object(parsedLine).canonicalBytes + [AuditFormat.newline] == line, "an audit line is not in canonical form")

        for text in [operation, userAgent, message, claimed] {
            checkBounded(text)
            let renamed = CloudTrailRecord.lowerCamel(text)
            check(renamed.utf8.count == text.utf8.count && renamed.utf8.dropFirst().elementsEqual(text.utf8.dropFirst()), "lowerCamel changed more than the first letter")
        }
    }

    static func checkBounded(_ text: String) {
        for limit in [3, 8, CloudTrailRecord.boundedMemberBytes] {
            let bounded = CloudTrailRecord.bounded(text, limit: limit)
            check(bounded.utf8.count <= limit, "bounded(limit: \(limit)) gave \(bounded.utf8.count) bytes")
            if text.utf8.count <= limit {
                check(bounded == text, "bounded changed a text within its limit")
            } else {
                check(bounded.hasSuffix("...") && text.unicodeScalars.starts(with: bounded.unicodeScalars.dropLast(3)), "bounded is not a prefix and \"...\"")
            }
        }
    }
}
