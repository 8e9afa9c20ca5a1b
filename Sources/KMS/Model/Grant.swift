public import Foundation

/// The operations a grant can allow, spelled as the API spells them.
public enum GrantOperation: String, Sendable, Codable, CaseIterable, Comparable {
    case decrypt = "Decrypt"
    case encrypt = "Encrypt"
    case generateDataKey = "GenerateDataKey"
    case generateDataKeyWithoutPlaintext = "GenerateDataKeyWithoutPlaintext"
    case reEncryptFrom = "ReEncryptFrom"
    case reEncryptTo = "ReEncryptTo"
    case sign = "Sign"
    case verify = "Verify"
    case getPublicKey = "GetPublicKey"
    case createGrant = "CreateGrant"
    case retireGrant = "RetireGrant"
    case describeKey = "DescribeKey"
    case generateDataKeyPair = "GenerateDataKeyPair"
    case generateDataKeyPairWithoutPlaintext = "GenerateDataKeyPairWithoutPlaintext"
    case generateMac = "GenerateMac"
    case verifyMac = "VerifyMac"
    case deriveSharedSecret = "DeriveSharedSecret"

    public static func < (lhs: GrantOperation, rhs: GrantOperation) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The operations a grant with an encryption-context constraint may allow: those that take an encryption context,
    /// CreateGrant (whose new grants must be as strict), and DescribeKey and RetireGrant, which the constraint does
    /// not bind (``isBoundByConstraints``), as the AWS API reference says.
    public var acceptsEncryptionContext: Bool {
        switch self {
        case .decrypt, .encrypt, .generateDataKey, .generateDataKeyWithoutPlaintext, .reEncryptFrom, .reEncryptTo,
            .generateDataKeyPair, .generateDataKeyPairWithoutPlaintext, .createGrant, .retireGrant, .describeKey:
            return true
        default:
            return false
        }
    }

    /// Whether a grant's encryption-context constraint applies to the operation: not to DescribeKey and RetireGrant,
    /// which take no encryption context.
    public var isBoundByConstraints: Bool { self != .describeKey && self != .retireGrant }
}

/// Limits a grant to requests whose encryption context equals, or includes, the given pairs.
public struct GrantConstraints: Sendable, Equatable, Codable {
    public var encryptionContextEquals: [String: String]?
    public var encryptionContextSubset: [String: String]?

    public init(encryptionContextEquals: [String: String]? = nil, encryptionContextSubset: [String: String]? = nil) {
        self.encryptionContextEquals = encryptionContextEquals
        self.encryptionContextSubset = encryptionContextSubset
    }

    public var isEmpty: Bool { encryptionContextEquals == nil && encryptionContextSubset == nil }

    /// Whether a request with `context` satisfies the constraints.
    public func allow(_ context: EncryptionContext) -> Bool {
        if let equals = encryptionContextEquals, context.pairs != equals { return false }
        if let subset = encryptionContextSubset, !subset.allSatisfy({ context.pairs[$0.key] == $0.value }) { return false }
        return true
    }

    /// Whether every request these constraints allow is also allowed by `parent` (a grant made through a grant
    /// may only narrow it), judged by both kinds of constraint on either side.
    public func isAtLeastAsStrict(as parent: GrantConstraints) -> Bool {
        if let equals = encryptionContextEquals {
            // One context at most: none when it lacks these constraints' own subset.
            let context = EncryptionContext(equals)
            return !allow(context) || parent.allow(context)
        }
        // Every context holding this subset (every context, without one): a parent allows them all only with no Equals
        // and a subset within this one.
        guard parent.encryptionContextEquals == nil else { return false }
        guard let subset = parent.encryptionContextSubset else { return true }
        let mine = encryptionContextSubset ?? [:]
        return subset.allSatisfy { mine[$0.key] == $0.value }
    }
}

public struct GrantRecord: Sendable, Equatable {
    /// 64 hexadecimal characters, as AWS grant ids are.
    public var id: String
    public var keyID: KeyID
    public var name: String?
    public var granteePrincipal: String
    public var retiringPrincipal: String?
    public var operations: [GrantOperation]
    public var constraints: GrantConstraints?
    /// The account of the principal that created the grant.
    public var issuingAccount: String
    public var creationDate: Date

    public init(
        id: String, keyID: KeyID, name: String?, granteePrincipal: String, retiringPrincipal: String?, operations: [GrantOperation],
        constraints: GrantConstraints?, issuingAccount: String, creationDate: Date
    ) {
        self.id = id
        self.keyID = keyID
        self.name = name
        self.granteePrincipal = granteePrincipal
        self.retiringPrincipal = retiringPrincipal
        self.operations = operations
        self.constraints = constraints
        self.issuingAccount = issuingAccount
        self.creationDate = creationDate
    }

    /// Whether this grant lets `principal` perform `operation` with `context`.
    public func allows(_ operation: GrantOperation, for principal: String, context: EncryptionContext) -> Bool {
        granteePrincipal == principal && operations.contains(operation)
            && (!operation.isBoundByConstraints || (constraints?.allow(context) ?? true))
    }
}
