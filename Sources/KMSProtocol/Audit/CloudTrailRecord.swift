import Foundation
import KMS
import JSON

/// Builds the CloudTrail record of one request (eventVersion 1.08, as KMS writes them).
///
/// Request and response members are copied by allowlist, so plaintext, ciphertext, data keys, grant tokens
/// and secrets can never reach the trail, whatever a future operation adds to its wire shapes.
struct CloudTrailRecord {
    var operation: String
    var requestID: String
    /// Also what GetKeyLastUsage reports for the request.
    var eventID: String
    var eventTime: Date
    var region: String
    /// The caller as authenticated; nil when authentication failed.
    var caller: Caller?
    /// The access key the request claimed, when authentication failed.
    var claimedAccessKeyID: String?
    var sourceIP: String?
    var userAgent: String?
    /// The parsed request body; nil when it is not JSON, and for a request that failed authentication (whose
    /// record holds only the operation, source, user agent and error).
    var request: JSONValue?
    var response: JSONValue?
    var error: KMSError?
    var resources: [AuditResources.Resource]

    /// Request members that may appear in the trail.
    static let requestMembers: Set<String> = [
        "KeyId", "EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext", "SourceKeyId", "DestinationKeyId",
        "EncryptionAlgorithm", "SourceEncryptionAlgorithm", "DestinationEncryptionAlgorithm", "KeySpec", "NumberOfBytes", "KeyUsage",
        "CustomerMasterKeySpec", "Description", "Origin", "AliasName", "TargetKeyId", "PendingWindowInDays", "TagKeys", "Tags", "Limit",
        "Marker", "GranteePrincipal", "RetiringPrincipal", "Operations", "Constraints", "Name", "GrantId", "PolicyName", "Policy",
        "BypassPolicyLockoutSafetyCheck", "DryRun", "MultiRegion", "MacAlgorithm", "RotationPeriodInDays",
        "SigningAlgorithm", "MessageType", "KeyAgreementAlgorithm", "KeyPairSpec",
        "WrappingAlgorithm", "WrappingKeySpec", "ValidTo", "ExpirationModel", "ImportType", "KeyMaterialId", "KeyMaterialDescription",
        "IncludeKeyMaterial",
        // Custom key stores; never KeyStorePassword.
        "CustomKeyStoreId", "CustomKeyStoreName", "NewCustomKeyStoreName", "CloudHsmClusterId", "CustomKeyStoreType",
        "TrustAnchorCertificate", "XksKeyId",
    ]

    /// Response members that may appear in the trail (CloudTrail leaves most responses out).
    static let responseMembers: Set<String> = [
        "KeyMetadata", "GrantId", "DeletionDate", "KeyState", "PendingWindowInDays", "CustomKeyStoreId", "KeyMaterialId",
    ]

    /// Response members some operations' records add, as KMS's CloudTrail examples show them (ImportKeyMaterial:
    /// `responseElements.keyId` and `keyMaterialId`).
    static let operationResponseMembers: [String: Set<String>] = [
        "ImportKeyMaterial": ["KeyId"], "DeleteImportedKeyMaterial": ["KeyId"],
    ]

    /// Every response member `operation`'s record may carry.
    static func responseMembers(of operation: String) -> Set<String> {
        operationResponseMembers[operation].map { responseMembers.union($0) } ?? responseMembers
    }

    static let readOnlyPrefixes = ["Describe", "List", "Get"]

    /// The record's canonical bytes, what the audit trail stores and hashes, written member by member in sorted
    /// order rather than built as a dictionary and sorted (this runs for every request).
    var canonicalBytes: [UInt8] {
        var record = CanonicalObjectWriter()
        record.member("awsRegion", string: region)
        if let error {
            record.member("errorCode", string: error.code.rawValue)
            // Left out when empty, as the response leaves out its message (InvalidCiphertextException, ...).
            if !error.message.isEmpty {
                record.member("errorMessage", string: Self.bounded(error.message, limit: 4 * Self.boundedMemberBytes))
            }
        }
        record.member("eventCategory", string: "Management")
        record.member("eventID", string: eventID)
        record.member("eventName", string: Self.bounded(operation))
        record.member("eventSource", string: "kms.amazonaws.com")
        record.member("eventTime", string: Self.timestamp(eventTime))
        record.member("eventType", string: "AwsApiCall")
        record.member("eventVersion", string: "1.08")
        record.member("managementEvent", .bool(true))
        record.member("readOnly", .bool(Self.readOnlyPrefixes.contains { operation.hasPrefix($0) }))
        if let account = resources.first?.accountID ?? caller?.accountID, !account.isEmpty {
            record.member("recipientAccountId", string: account)
        }
        record.member("requestID", string: requestID)
        record.member("requestParameters", canonicalBytes: Self.boundedParameters(Self.filtered(request, allowing: Self.requestMembers)))
        record.member(
            "resources", .array(resources.map { ["ARN": .string($0.arn), "accountId": .string($0.accountID), "type": "AWS::KMS::Key"] }))
        record.member("responseElements", error == nil ? Self.filtered(response, allowing: Self.responseMembers(of: operation)) : .null)
        record.member("sourceIPAddress", caller?.viaService.map(JSONValue.string) ?? sourceIP.map(JSONValue.string) ?? .null)
        record.member("userAgent", userAgent.map { .string(Self.bounded($0)) } ?? .null)
        record.member("userIdentity", userIdentity)
        return record.bytes
    }

    private var userIdentity: JSONValue {
        guard let caller else {
            return ["type": "Unknown", "accessKeyId": claimedAccessKeyID.map { .string(Self.bounded($0)) } ?? .null]
        }
        var identity: [String: JSONValue] = ["arn": .string(caller.principalARN), "accessKeyId": .string(caller.accessKeyID)]
        switch caller.principalKind {
        case .user:
            identity["type"] = "IAMUser"
            let arn = caller.principalARN
            identity["userName"] = .string(arn.lastIndex(of: "/").map { String(arn[arn.index(after: $0)...]) } ?? arn)
        case .role:
            identity["type"] = "AssumedRole"
        case .service:
            identity["type"] = "AWSService"
        }
        if !caller.accountID.isEmpty { identity["accountId"] = .string(caller.accountID) }
        identity["principalId"] = .string(caller.accessKeyID)
        if let service = caller.viaService { identity["invokedBy"] = .string(service) }
        return .object(identity)
    }

    /// The allowed members of a JSON object body, renamed lowerCamelCase as CloudTrail writes them.
    static func filtered(_ body: JSONValue?, allowing allowed: Set<String>) -> JSONValue {
        guard case .object(let members)? = body else { return .null }
        var kept: [String: JSONValue] = [:]
        for (name, member) in members where allowed.contains(name) {
            kept[lowerCamel(name)] = lowerCamelKeys(member, preservingKeysOf: name.hasSuffix("EncryptionContext") || name == "Constraints")
        }
        return kept.isEmpty ? .null : .object(kept)
    }

    /// Renames nested members too, except inside encryption contexts, whose keys are the caller's data.
    ///
    /// The names are the caller's: two of them may differ only in the case of their first letter (`TagKey` and
    /// `tagKey`) and so rename to one. Then the member whose own name sorts first by its UTF-8 bytes is kept, so
    /// the record is the same whatever order the members were read in.
    private static func lowerCamelKeys(_ value: JSONValue, preservingKeysOf preserve: Bool) -> JSONValue {
        switch value {
        case .object(let members):
            var renamed: [String: JSONValue] = [:]
            renamed.reserveCapacity(members.count)
            for name in members.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
                let newName = preserve ? name : lowerCamel(name)
                guard renamed[newName] == nil, let member = members[name] else { continue }
                renamed[newName] = lowerCamelKeys(member, preservingKeysOf: preserve || name.hasPrefix("EncryptionContext"))
            }
            return .object(renamed)
        case .array(let items):
            return .array(items.map { lowerCamelKeys($0, preservingKeysOf: preserve) })
        default:
            return value
        }
    }

    /// Lowers an ASCII first letter, as CloudTrail spells the model's member names; any other name is kept as sent.
    static func lowerCamel(_ name: String) -> String {
        guard let first = name.utf8.first, first >= UInt8(ascii: "A"), first <= UInt8(ascii: "Z") else { return name }
        var bytes = Array(name.utf8)
        bytes[0] = first + 32
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Request parameters larger than this (in canonical bytes) are recorded as their size only, as CloudTrail omits
    /// oversized parameters: a key policy (32 KiB at most) fits; a megabyte of junk from an authenticated caller does not.
    static let maximumParameterBytes = 64 * 1024

    /// The parameters' canonical bytes, serialised once: measured, then copied into the record as they are.
    static func boundedParameters(_ parameters: JSONValue) -> [UInt8] {
        let bytes = parameters.canonicalBytes
        guard bytes.count > maximumParameterBytes else { return bytes }
        return JSONValue.object(["omitted": true, "sizeInBytes": .number(Double(bytes.count))]).canonicalBytes
    }

    /// Strings the client chose (the operation name, user agent, claimed access key, messages that echo input) are
    /// recorded up to this many UTF-8 bytes, so no request can make its record large.
    static let boundedMemberBytes = 256

    /// `text` cut to at most `limit` UTF-8 bytes on a scalar boundary, with "..." when it was cut.
    static func bounded(_ text: String, limit: Int = boundedMemberBytes) -> String {
        guard text.utf8.count > limit else { return text }
        var scalars = String.UnicodeScalarView()
        var size = 0
        for scalar in text.unicodeScalars {
            size += UTF8.width(scalar)
            if size > limit - 3 { break }
            scalars.append(scalar)
        }
        return String(scalars) + "..."
    }

    static func timestamp(_ date: Date) -> String { ISO8601Seconds.string(date) }
}
