public import Foundation

/// Where everything but the domain key lives. Every mutating call is durable before it returns, so an
/// acknowledged change survives a crash or power cut.
///
/// Stores translate their own failures into ``KMSError`` (`.internalFailure` for I/O problems,
/// ``MetadataStoreError`` for constraint violations the service turns into AWS errors).
public protocol MetadataStore: Sendable {
    // Keys
    func insertKey(_ key: KeyRecord, backingKey: BackingKeyRecord, tags: [Tag]) async throws
    func key(_ id: KeyID) async throws -> KeyRecord?
    func updateKey(_ key: KeyRecord) async throws
    /// Keys in creation order, starting after `marker` (an opaque value from a previous page).
    func listKeys(after marker: String?, limit: Int) async throws -> Page<KeyRecord>
    func keysPendingDeletion(dueBy date: Date) async throws -> [KeyRecord]
    /// Removes the key with its backing keys, aliases and tags, and overwrites the freed bytes.
    func destroyKey(_ id: KeyID) async throws

    // Backing keys
    func backingKey(_ keyID: KeyID, version: UInt32) async throws -> BackingKeyRecord?
    /// Adds a new backing-key version and makes it the key's current version, atomically.
    func addBackingKey(_ backingKey: BackingKeyRecord) async throws
    /// Durably raises the reserved nonce count of one backing-key version.
    func reserveNonces(_ keyID: KeyID, version: UInt32, upTo reserved: UInt64) async throws

    // Aliases
    func alias(named name: String) async throws -> AliasRecord?
    /// Throws ``MetadataStoreError/duplicate`` when the name is taken.
    func insertAlias(_ alias: AliasRecord) async throws
    func updateAlias(_ alias: AliasRecord) async throws
    func deleteAlias(named name: String) async throws
    /// Aliases sorted by name, optionally only those of one key.
    func listAliases(for keyID: KeyID?, after marker: String?, limit: Int) async throws -> Page<AliasRecord>

    // Tags
    func tags(of keyID: KeyID) async throws -> [Tag]
    /// Adds or overwrites tags.
    func putTags(_ tags: [Tag], on keyID: KeyID) async throws
    func removeTags(_ tagKeys: [String], from keyID: KeyID) async throws
}

public enum MetadataStoreError: Error, Sendable {
    /// A unique name or id is already taken.
    case duplicate
    /// A marker that this store did not hand out.
    case invalidMarker
}

/// The time source of the service: injectable so tests can move past a deletion window.
public protocol KMSClock: Sendable {
    func now() -> Date
}

public struct SystemClock: KMSClock {
    public init() {}
    public func now() -> Date { Date() }
}
