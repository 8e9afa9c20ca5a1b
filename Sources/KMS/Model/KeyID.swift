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

/// The Regions Trent serves and the account created by default. Each request acts in the Region of its SigV4
/// scope; every ARN names the Region of what it points to.
public struct ServiceLocation: Sendable, Hashable {
    /// The Region of callers inside the process (CLI subcommands), and the one a store's rows from before
    /// Regions belong to.
    public var region: String
    /// Every Region served; includes `region`.
    public var regions: Set<String>
    /// The account of the embedded default administrator.
    public var accountID: String

    public init(region: String, regions: Set<String> = [], accountID: String) {
        self.region = region
        self.regions = regions.union([region])
        self.accountID = accountID
    }

    /// The Region a caller acts in.
    public func region(of caller: Caller) -> String { caller.region ?? region }

    public static func keyARN(_ id: KeyID, account: String, region: String) -> String { "arn:aws:kms:\(region):\(account):key/\(id)" }
    public static func keyARN(_ key: KeyRecord) -> String { keyARN(key.id, account: key.accountID, region: key.region) }
    /// `aliasName` includes its `alias/` prefix.
    public static func aliasARN(_ aliasName: String, account: String, region: String) -> String { "arn:aws:kms:\(region):\(account):\(aliasName)" }
}

extension KeyRecord {
    /// The key's ARN, in its own Region and account.
    public var arn: String { ServiceLocation.keyARN(self) }
}
