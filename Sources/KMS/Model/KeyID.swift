public import Foundation

/// A KMS key id: a UUID, printed lowercase as AWS prints it.
public struct KeyID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let uuid: UUID

    public init(_ uuid: UUID = UUID()) { self.uuid = uuid }

    /// Parses the canonical 36-character form only (AWS rejects anything else as a key id).
    public init?(_ text: String) {
        guard text.utf8.count == 36, let uuid = UUID(uuidString: text) else { return nil }
        self.uuid = uuid
    }

    /// The 16 bytes that name the key in a ciphertext blob.
    public init(bytes: some Collection<UInt8>) {
        precondition(bytes.count == 16)
        let b = Array(bytes)
        self.uuid = UUID(uuid: (b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]))
    }

    public var bytes: [UInt8] { withUnsafeBytes(of: uuid.uuid) { Array($0) } }
    public var description: String { uuid.uuidString.lowercased() }
    public static func < (lhs: KeyID, rhs: KeyID) -> Bool { lhs.description < rhs.description }
}

/// Where ARNs point: the Region Trent serves, and the account created by default.
public struct ServiceLocation: Sendable, Hashable {
    public var region: String
    /// The account of the embedded default administrator.
    public var accountID: String

    public init(region: String, accountID: String) {
        self.region = region
        self.accountID = accountID
    }

    public func keyARN(_ id: KeyID, account: String) -> String { "arn:aws:kms:\(region):\(account):key/\(id)" }
    public func keyARN(_ key: KeyRecord) -> String { keyARN(key.id, account: key.accountID) }
    /// `aliasName` includes its `alias/` prefix.
    public func aliasARN(_ aliasName: String, account: String) -> String { "arn:aws:kms:\(region):\(account):\(aliasName)" }
}
