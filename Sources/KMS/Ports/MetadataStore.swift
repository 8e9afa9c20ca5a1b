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
    /// Writes `change` to a key's row, and only the columns it names, if the row satisfies `condition` as it is
    /// when written (not as some earlier read saw it): concurrent changes of other attributes all stand, and a
    /// state rule holds for the row actually written. Returns the row as written; nil when the key is gone or the
    /// condition does not hold, and then nothing is written. The one way to change an existing key's row.
    func updateKey(_ id: KeyID, _ change: KeyChange, if condition: KeyCondition) async throws -> KeyRecord?
    /// The keys of one account in one Region in creation order, starting after `marker` (an opaque value from a
    /// previous page).
    func listKeys(account: String, region: String, after marker: String?, limit: Int) async throws -> Page<KeyRecord>
    /// A multi-Region key and its related keys (every key whose material `materialOwner` owns), in creation order.
    func relatedKeys(of materialOwner: KeyID) async throws -> [KeyRecord]
    /// Makes `replica` the primary key of its related keys and `primary` a replica, moving the rotation schedule with
    /// the role, atomically and only if both are Enabled and in those roles when written. Returns whether it did.
    func updatePrimary(from primary: KeyID, to replica: KeyID) async throws -> Bool
    func keysPendingDeletion(dueBy date: Date) async throws -> [KeyRecord]
    /// Keys with automatic rotation enabled whose next rotation date has come.
    func keysDueForRotation(dueBy date: Date) async throws -> [KeyRecord]
    /// Keys with a version whose imported material expires by `date` and is still present.
    func keysWithExpiringMaterial(dueBy date: Date) async throws -> [KeyRecord]
    /// Stores imported material as backing-key version `backingKey.version` with this expiry, keeping the version's
    /// nonce count, material id and (when none is given) description. For a version the key uses (up to its current
    /// one) the key becomes Enabled once every such version holds material, and takes its current version's expiry;
    /// a later version is staged for RotateKeyOnDemand and leaves the key as it is. Atomic, if the key's row satisfies
    /// `condition` when written (as ``updateKey(_:_:if:)``). Returns the row as written; nil, with nothing stored.
    func storeImportedMaterial(
        _ backingKey: BackingKeyRecord, expirationModel: ExpirationModel, validTo: Date?, if condition: KeyCondition
    ) async throws -> KeyRecord?
    /// Erases the imported material of one version: a version the key uses keeps its row (the binding proof stays,
    /// to recognise the same material when it returns) and the key becomes PendingImport unless it is pending
    /// deletion, which it stays (the current version's expiry goes from the key); a staged version is removed and the
    /// key stays as it is. Atomic, and only if the row satisfies `condition` when written (its `materialExpiringBy`
    /// is this version's material's expiry); returns the row as written, or nil (nothing erased).
    func deleteImportedMaterial(of keyID: KeyID, version: UInt32, if condition: KeyCondition) async throws -> KeyRecord?
    /// Makes a staged version of imported material the key's current one (an on-demand rotation: the version's
    /// rotation type and date are set, and the key takes its expiry), atomically, where `condition` holds and the
    /// version is still after the current one. Returns the row as written, or nil.
    func makeStagedMaterialCurrent(_ keyID: KeyID, version: UInt32, on date: Date, if condition: KeyCondition) async throws -> KeyRecord?
    /// Removes the key with its backing keys, aliases and tags, and overwrites the freed bytes. The backing keys of
    /// a multi-Region key that has related keys left move to the oldest of them instead.
    func destroyKey(_ id: KeyID) async throws

    // Backing keys
    func backingKey(_ keyID: KeyID, version: UInt32) async throws -> BackingKeyRecord?
    /// Every backing-key version of a key, oldest first.
    func backingKeys(of keyID: KeyID) async throws -> [BackingKeyRecord]
    /// Adds a new backing-key version and makes it the current version of the key and of its related keys and, in the same atomic step, applies
    /// `change` to the key's row where `condition` holds for it (a scheduled rotation moves its schedule on: a crash
    /// can never leave the one without the other).
    func addBackingKey(_ backingKey: BackingKeyRecord, with change: KeyChange?, if condition: KeyCondition) async throws
    /// Secret backing keys still bound the way earlier versions bound them (by the key itself), listed once, when the
    /// store was upgraded to sealing-key bindings; ``KeyManagementService/carryOverLegacyBindings()`` empties the list.
    func legacyBoundBackingKeys() async throws -> [BackingKeyRecord]
    /// Takes a listed backing key off the list, replacing its binding with `binding` (nil: leaving it as it was, to be
    /// refused when used).
    func finishCarryingOver(_ keyID: KeyID, version: UInt32, binding: [UInt8]?) async throws
    /// Durably raises the reserved nonce count of one backing-key version.
    func reserveNonces(_ keyID: KeyID, version: UInt32, upTo reserved: UInt64) async throws

    // Aliases (names are unique within an account and Region)
    func alias(named name: String, account: String, region: String) async throws -> AliasRecord?
    /// Throws ``MetadataStoreError/duplicate`` when the name is taken in the account and Region.
    func insertAlias(_ alias: AliasRecord) async throws
    func updateAlias(_ alias: AliasRecord) async throws
    func deleteAlias(named name: String, account: String, region: String) async throws
    /// The aliases of an account in a Region sorted by name, optionally only those of one key.
    func listAliases(account: String, region: String, for keyID: KeyID?, after marker: String?, limit: Int) async throws -> Page<AliasRecord>
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
    /// Grants whose retiring principal is `principal`, in creation order; with `keyAccount`, only the grants on
    /// that account's keys (a grant belongs to its key's account).
    func grants(retirableBy principal: String, keyAccount: String?) async throws -> [GrantRecord]
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

/// One change to an existing key's row (``MetadataStore/updateKey(_:_:if:)``). Each names the columns it writes,
/// and a store writes those and no others, so that changes of different attributes never undo each other.
public enum KeyChange: Sendable, Equatable {
    /// UpdateKeyDescription.
    case description(String)
    /// PutKeyPolicy.
    case policy(String)
    /// EnableKey and DisableKey.
    case state(KeyState)
    /// ScheduleKeyDeletion: PendingDeletion, with its deletion date and waiting period.
    case deletionScheduled(date: Date, pendingWindowInDays: Int)
    /// ScheduleKeyDeletion of a multi-Region primary key with replicas: PendingReplicaDeletion, with its waiting
    /// period and no deletion date yet.
    case replicaDeletionScheduled(pendingWindowInDays: Int)
    /// CancelKeyDeletion: the deletion date and waiting period are cleared, and the key returns to Disabled, or to
    /// PendingImport when it is of origin EXTERNAL and holds no imported material at that moment.
    case deletionCancelled
    /// Automatic rotation on (its schedule) or off (nil); also the scheduler moving the next rotation date.
    case rotationSchedule(RotationSchedule?)
}

/// What a key's row must hold, when a change is written, for the change to apply. A store evaluates it against
/// the row it writes, in the same atomic step (in SQL, the UPDATE's WHERE clause), never against an earlier read,
/// so it holds on one node or many. Every member set must hold; ``any`` holds for every row.
public struct KeyCondition: Sendable, Equatable {
    /// The key's state is one of these.
    public var states: Set<KeyState>?
    /// Automatic rotation is on, and the next rotation date is not after this (the rotation is still due).
    public var rotationDueBy: Date?
    /// The rotation schedule is exactly this one (to a millisecond).
    public var rotationSchedule: RotationSchedule?
    /// The key's imported material has an expiry date, and it is not after this one.
    public var materialExpiringBy: Date?
    /// The key's current backing-key version is below this one (a staged version is still staged).
    public var currentVersionBelow: UInt32?

    public init(
        states: Set<KeyState>? = nil, rotationDueBy: Date? = nil, rotationSchedule: RotationSchedule? = nil,
        materialExpiringBy: Date? = nil, currentVersionBelow: UInt32? = nil
    ) {
        self.currentVersionBelow = currentVersionBelow
        self.states = states
        self.rotationDueBy = rotationDueBy
        self.rotationSchedule = rotationSchedule
        self.materialExpiringBy = materialExpiringBy
    }

    public static let any = KeyCondition()
    /// Management operations other than the deletion ones: every state but PendingDeletion and PendingReplicaDeletion.
    public static let notPendingDeletion = KeyCondition(states: Set(KeyState.allCases).subtracting([.pendingDeletion, .pendingReplicaDeletion]))

    public static func state(in states: Set<KeyState>) -> KeyCondition { KeyCondition(states: states) }

    /// Whether `key`, as read, satisfies the condition (what a store checks in its own terms when writing).
    public func isSatisfied(by key: KeyRecord) -> Bool {
        if let states, !states.contains(key.state) { return false }
        if let rotationDueBy {
            guard let schedule = key.rotationSchedule, schedule.nextRotationDate <= rotationDueBy else { return false }
        }
        if let rotationSchedule {
            guard let schedule = key.rotationSchedule, schedule.periodInDays == rotationSchedule.periodInDays,
                abs(schedule.nextRotationDate.timeIntervalSince(rotationSchedule.nextRotationDate)) < 0.001
            else { return false }
        }
        if let materialExpiringBy {
            guard let validTo = key.validTo, validTo <= materialExpiringBy else { return false }
        }
        if let currentVersionBelow, key.currentVersion >= currentVersionBelow { return false }
        return true
    }
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

extension MetadataStore {
    /// Adds a new backing-key version and makes it the key's current version, atomically.
    public func addBackingKey(_ backingKey: BackingKeyRecord) async throws {
        try await addBackingKey(backingKey, with: nil, if: .any)
    }
}
