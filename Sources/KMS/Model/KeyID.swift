public import Foundation

/// A KMS key id: a UUID, printed lowercase as AWS prints it; or the id of one key of a set of related
/// multi-Region keys: `mrk-` and the 32 lowercase hex digits of a UUID the related keys share, with the Region of
/// this one (related keys have the same id in different Regions).
public struct KeyID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let uuid: UUID
    /// The Region of a multi-Region key; nil for a single-Region key.
    public let multiRegion: String?

    public init(_ uuid: UUID = UUID()) {
        self.uuid = uuid
        self.multiRegion = nil
    }

    /// A multi-Region key's id in `region`.
    public init(multiRegion uuid: UUID = UUID(), region: String) {
        self.uuid = uuid
        self.multiRegion = region
    }

    /// Parses the canonical 36-character form only (AWS rejects anything else as a key id).
    public init?(_ text: String) {
        guard text.utf8.count == 36, let uuid = UUID(uuidString: text) else { return nil }
        self.init(uuid)
    }

    /// Parses a key id as a request names it: a UUID, or `mrk-` and 32 lowercase hex digits, meaning the related
    /// key in `region`.
    public init?(_ text: String, region: String) {
        if let id = KeyID(text) {
            self = id
            return
        }
        guard text.utf8.count == 36, text.hasPrefix(Self.multiRegionPrefix) else { return nil }
        let hex = Array(text.utf8.dropFirst(Self.multiRegionPrefix.utf8.count))
        guard hex.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }) else {
            return nil
        }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: hex.count, by: 2) {
            guard let byte = UInt8(String(decoding: hex[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.init(multiRegion: Self.uuid(bytes), region: region)
    }

    /// The 16 bytes that name the key in a ciphertext blob (a multi-Region key's blob has its own version, see
    /// ``CiphertextBlob``).
    public init(bytes: some Collection<UInt8>, multiRegion region: String? = nil) {
        precondition(bytes.count == 16)
        self.uuid = Self.uuid(Array(bytes))
        self.multiRegion = region
    }

    /// The text a store keeps the id as: a multi-Region key's names its Region too, since related keys share an id.
    public init?(storageKey: String) {
        let parts = storageKey.split(separator: "/", maxSplits: 1)
        if parts.count == 2 {
            guard let id = KeyID(String(parts[0]), region: String(parts[1])), id.multiRegion != nil else { return nil }
            self = id
        } else {
            guard let id = KeyID(storageKey) else { return nil }
            self = id
        }
    }

    public var storageKey: String { multiRegion.map { "\(description)/\($0)" } ?? description }

    private static let multiRegionPrefix = "mrk-"

    private static func uuid(_ b: [UInt8]) -> UUID {
        UUID(uuid: (b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]))
    }

    public var bytes: [UInt8] { withUnsafeBytes(of: uuid.uuid) { Array($0) } }
    public var description: String {
        guard multiRegion != nil else { return uuid.uuidString.lowercased() }
        return Self.multiRegionPrefix + bytes.map { byte in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined()
    }
    public static func < (lhs: KeyID, rhs: KeyID) -> Bool { lhs.storageKey < rhs.storageKey }
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
