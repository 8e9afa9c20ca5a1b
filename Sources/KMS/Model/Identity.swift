public import Foundation

/// An AWS-style account: the owner of keys, aliases and principals.
public struct Account: Sendable, Equatable {
    /// Twelve digits, as AWS account ids are.
    public var id: String
    public var name: String
    public var creationDate: Date

    public init(id: String, name: String, creationDate: Date) {
        self.id = id
        self.name = name
        self.creationDate = creationDate
    }

    public static func isValidID(_ id: String) -> Bool { id.utf8.count == 12 && id.allSatisfy(\.isASCIIDigit) }
    public var rootARN: String { "arn:aws:iam::\(id):root" }
}

/// Who can call: an IAM-style user or role of an account, or an integrated service (such as
/// `rds.us-east-1.amazonaws.com`) that calls on its own behalf or on behalf of a user.
public struct Principal: Sendable, Equatable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case user, role, service
    }

    /// `arn:aws:iam::<account>:user/<name>`, `arn:aws:iam::<account>:role/<name>`, or the service's name.
    public var arn: String
    public var kind: Kind
    /// Nil for services, which belong to no account.
    public var accountID: String?
    public var name: String
    public var tags: [Tag]
    public var creationDate: Date

    public init(arn: String, kind: Kind, accountID: String?, name: String, tags: [Tag] = [], creationDate: Date) {
        self.arn = arn
        self.kind = kind
        self.accountID = accountID
        self.name = name
        self.tags = tags
        self.creationDate = creationDate
    }

    /// The ARN IAM writes for a user or role; a service's principal is its name.
    public static func arn(kind: Kind, accountID: String?, name: String) -> String {
        switch kind {
        case .user: "arn:aws:iam::\(accountID ?? ""):user/\(name)"
        case .role: "arn:aws:iam::\(accountID ?? ""):role/\(name)"
        case .service: name
        }
    }

    /// IAM names: letters, digits and `+=,.@_-`, with `/` for paths; services: a DNS-like name.
    public static func isValidName(_ name: String, kind: Kind) -> Bool {
        guard (1...128).contains(name.utf8.count) else { return false }
        let allowed: Set<Character> = kind == .service ? [".", "-"] : ["+", "=", ",", ".", "@", "_", "-", "/"]
        return name.allSatisfy { ($0.isASCII && ($0.isLetter || $0.isNumber)) || allowed.contains($0) }
    }
}

/// An access key: the secret is kept only sealed under the token's sealing key.
public struct AccessKeyRecord: Sendable, Equatable {
    public enum Status: String, Sendable, Codable {
        case active = "Active"
        case inactive = "Inactive"
    }

    public var accessKeyID: String
    public var principalARN: String
    public var sealedSecret: SealedData
    public var status: Status
    public var creationDate: Date

    public init(accessKeyID: String, principalARN: String, sealedSecret: SealedData, status: Status, creationDate: Date) {
        self.accessKeyID = accessKeyID
        self.principalARN = principalARN
        self.sealedSecret = sealedSecret
        self.status = status
        self.creationDate = creationDate
    }

    /// A principal may hold two access keys, so a secret can be rotated without downtime (as in IAM).
    public static let maximumPerPrincipal = 2
}

/// An IAM identity policy attached to a user or role.
public struct IdentityPolicy: Sendable, Equatable {
    public var principalARN: String
    public var name: String
    public var document: String

    public init(principalARN: String, name: String, document: String) {
        self.principalARN = principalARN
        self.name = name
        self.document = document
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
