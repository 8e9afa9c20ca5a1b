public import Foundation

/// Where everything but the domain key lives. Every mutating call is durable before it returns, so an
/// acknowledged change survives a crash or power cut.
///
/// Stores translate their own failures into ``KMSError`` (`.internalFailure` for I/O problems,
/// ``MetadataStoreError`` for constraint violations the service turns into AWS errors).
public protocol MetadataStore: Sendable {
    // Keys
    /// Inserts a key with its first backing key; a key awaiting imported material has none yet.
    func insertKey(_ key: KeyRecord, backingKey: BackingKeyRecord?, tags: [Tag]) async throws
    func key(_ id: KeyID) async throws -> KeyRecord?
    func updateKey(_ key: KeyRecord) async throws
    /// The keys of one account in creation order, starting after `marker` (an opaque value from a previous page).
    func listKeys(account: String, after marker: String?, limit: Int) async throws -> Page<KeyRecord>
    func keysPendingDeletion(dueBy date: Date) async throws -> [KeyRecord]
    /// Keys with automatic rotation enabled whose next rotation date has come.
    func keysDueForRotation(dueBy date: Date) async throws -> [KeyRecord]
    /// Keys whose imported material expires by `date` and is still present.
    func keysWithExpiringMaterial(dueBy date: Date) async throws -> [KeyRecord]
    /// Stores imported material as the key's backing key (keeping the version's nonce count) and the key's new
    /// state and expiration, atomically.
    func storeImportedMaterial(_ backingKey: BackingKeyRecord, for key: KeyRecord) async throws
    /// Erases a key's imported material (its wrapped keys; the binding proofs stay, to recognise the same
    /// material when it returns) and stores the key's new state, atomically.
    func deleteImportedMaterial(of key: KeyRecord) async throws
    /// Removes the key with its backing keys, aliases and tags, and overwrites the freed bytes.
    func destroyKey(_ id: KeyID) async throws

    // Backing keys
    func backingKey(_ keyID: KeyID, version: UInt32) async throws -> BackingKeyRecord?
    /// Every backing-key version of a key, oldest first.
    func backingKeys(of keyID: KeyID) async throws -> [BackingKeyRecord]
    /// Adds a new backing-key version and makes it the key's current version, atomically.
    func addBackingKey(_ backingKey: BackingKeyRecord) async throws
    /// Durably raises the reserved nonce count of one backing-key version.
    func reserveNonces(_ keyID: KeyID, version: UInt32, upTo reserved: UInt64) async throws

    // Aliases (names are unique within an account)
    func alias(named name: String, account: String) async throws -> AliasRecord?
    /// Throws ``MetadataStoreError/duplicate`` when the name is taken in the account.
    func insertAlias(_ alias: AliasRecord) async throws
    func updateAlias(_ alias: AliasRecord) async throws
    func deleteAlias(named name: String, account: String) async throws
    /// An account's aliases sorted by name, optionally only those of one key.
    func listAliases(account: String, for keyID: KeyID?, after marker: String?, limit: Int) async throws -> Page<AliasRecord>
    /// Every alias of a key, sorted by name.
    func aliases(of keyID: KeyID) async throws -> [AliasRecord]

    // Tags
    func tags(of keyID: KeyID) async throws -> [Tag]
    /// Adds or overwrites tags.
    func putTags(_ tags: [Tag], on keyID: KeyID) async throws
    func removeTags(_ tagKeys: [String], from keyID: KeyID) async throws

    // Last usage
    /// Upserts each key's last successful cryptographic use.
    func recordLastUsage(_ usage: [KeyID: KeyLastUsage]) async throws
    func lastUsage(of keyID: KeyID) async throws -> KeyLastUsage?

    // Grants
    func insertGrant(_ grant: GrantRecord) async throws
    func grant(_ id: String) async throws -> GrantRecord?
    /// A key's grants in creation order.
    func grants(of keyID: KeyID) async throws -> [GrantRecord]
    /// Grants whose retiring principal is `principal`, in creation order.
    func grants(retirableBy principal: String) async throws -> [GrantRecord]
    func deleteGrant(_ id: String) async throws

    // Identities
    /// Throws ``MetadataStoreError/duplicate`` when the id is taken.
    func insertAccount(_ account: Account) async throws
    func account(_ id: String) async throws -> Account?
    func accounts() async throws -> [Account]
    /// Throws ``MetadataStoreError/duplicate`` when the ARN is taken.
    func insertPrincipal(_ principal: Principal) async throws
    func principal(_ arn: String) async throws -> Principal?
    func principals() async throws -> [Principal]
    /// Removes the principal with its access keys and identity policies.
    func deletePrincipal(_ arn: String) async throws
    func insertAccessKey(_ key: AccessKeyRecord) async throws
    func accessKey(_ accessKeyID: String) async throws -> AccessKeyRecord?
    func accessKeys(of principalARN: String) async throws -> [AccessKeyRecord]
    func updateAccessKeyStatus(_ accessKeyID: String, _ status: AccessKeyRecord.Status) async throws
    func deleteAccessKey(_ accessKeyID: String) async throws
    func putIdentityPolicy(_ policy: IdentityPolicy) async throws
    func deleteIdentityPolicy(principalARN: String, name: String) async throws
    func identityPolicies(of principalARN: String) async throws -> [IdentityPolicy]
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
