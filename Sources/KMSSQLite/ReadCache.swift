import Dispatch
import GRDB
import KMS
import Synchronization

/// The store's read cache: the rows every KMS request reads (its key, the backing key, the caller's access key,
/// principal and identity policies, the key's tags, aliases and grants), kept in memory so the hot path does not
/// query SQLite.
///
/// Correctness rests on one rule: **a read never returns anything older than the database as it was when the
/// read began**, with one bounded exception for other processes. Writes through this store empty the cache as
/// soon as they commit, so every change made through the service (DisableKey, RevokeGrant, PutKeyPolicy, tags,
/// deletion, ...) takes effect for the very next request. Changes committed by another process (`trent identity`
/// writes while the server runs) are found through a dedicated connection's `PRAGMA data_version`, which changes
/// whenever any other connection commits; the store asks it at most once per millisecond, so such a change
/// takes effect within a millisecond. A changed version empties the whole cache. A value read from SQLite is kept only if no emptying happened between the
/// check that preceded the read and the read's end (a generation counter), so a read racing a commit never
/// leaves a stale row behind. Every write path, present or future, is covered without listing it, since each
/// one commits.
///
/// Memory is bounded: each map holds at most `capacity` entries and is emptied when full.
struct ReadCache {
    struct BackingKeyID: Hashable {
        var keyID: KeyID
        var version: UInt32
    }

    struct AliasName: Hashable {
        var account: String
        var region: String
        var name: String
    }

    var keys: [KeyID: KeyRecord?] = [:]
    var backingKeys: [BackingKeyID: BackingKeyRecord?] = [:]
    var aliasesByName: [AliasName: AliasRecord?] = [:]
    var aliasesOfKey: [KeyID: [AliasRecord]] = [:]
    var tags: [KeyID: [Tag]] = [:]
    var grants: [KeyID: [GrantRecord]] = [:]
    var principals: [String: Principal?] = [:]
    var accessKeys: [String: AccessKeyRecord?] = [:]
    var identityPolicies: [String: [IdentityPolicy]] = [:]

    /// Bumped by every emptying; a read that started under an older generation is not kept.
    var generation: UInt64 = 0
    /// Bumped when some backing-key rows are forgotten (nonce reservations).
    var backingGeneration: UInt64 = 0
    /// The `backingGeneration` at which each row was last forgotten: a read of that row that started before is
    /// not kept, while reads of other rows are, so the reservations of a burst of first uses (100,000 keys
    /// warming up) do not keep every other key's row out of the cache.
    var backingChanges: [BackingKeyID: UInt64] = [:]
    /// Reads of backing keys that started before this were begun before `backingChanges` was last cleared.
    var backingFloor: UInt64 = 0
    /// The last `PRAGMA data_version` seen.
    var dataVersion: Int64 = .min

    mutating func empty() {
        keys.removeAll()
        backingKeys.removeAll()
        aliasesByName.removeAll()
        aliasesOfKey.removeAll()
        tags.removeAll()
        grants.removeAll()
        principals.removeAll()
        accessKeys.removeAll()
        identityPolicies.removeAll()
        backingChanges.removeAll()
        generation &+= 1
    }
}

/// The cache and the connection that tells when it went stale.
final class CachedReads: Sendable {
    private let state = Mutex(ReadCache())
    private let watch: DatabaseQueue?
    let capacity: Int

    /// - Parameter watch: a connection of its own on the same file; nil disables caching.
    /// Nanoseconds between two questions to SQLite about other processes' commits.
    let checkInterval: UInt64

    init(watch: DatabaseQueue?, capacity: Int, checkInterval: UInt64 = 1_000_000) {
        self.watch = watch
        self.capacity = capacity
        self.checkInterval = checkInterval
    }

    var enabled: Bool { watch != nil && capacity > 0 }

    /// When SQLite was last asked (monotonic nanoseconds).
    private let lastCheck = Atomic<UInt64>(0)

    /// Empties the cache if anything committed since the last check; returns the generation to read under.
    ///
    /// Commits by this store empty the cache themselves, at once. Commits by other processes are found by asking
    /// SQLite, at most once per `checkInterval`: a request sees another process's change (an identity changed by
    /// `trent identity`) at most that long after it committed. Asking on every read cost more than all the
    /// reads it saves (a lock on a serial queue per row, blocking the cooperative threads).
    func check() -> UInt64? {
        guard let watch, capacity > 0 else { return nil }
        let now = DispatchTime.now().uptimeNanoseconds
        let last = lastCheck.load(ordering: .relaxed)
        if now &- last < checkInterval {
            return state.withLock { $0.generation }
        }
        lastCheck.store(now, ordering: .relaxed)
        let version: Int64
        do {
            version = try watch.inDatabase { db in try Int64.fetchOne(db.cachedStatement(sql: "PRAGMA data_version")) ?? 0 }
        } catch {
            state.withLock { $0.empty() }
            return nil
        }
        return state.withLock { cache in
            if cache.dataVersion != version {
                cache.empty()
                cache.dataVersion = version
            }
            return cache.generation
        }
    }

    /// Called after every write commits (and after a failed one: it may have committed).
    func invalidate() {
        state.withLock { $0.empty() }
    }

    /// After a commit on the watch connection itself (which does not change its data_version): forgets only the
    /// rows that commit changed, and keeps no read that was in flight meanwhile.
    func invalidate(backingKeys ids: [ReadCache.BackingKeyID]) {
        state.withLock { cache in
            cache.backingGeneration &+= 1
            if cache.backingChanges.count + ids.count > capacity {
                cache.backingChanges.removeAll()
                cache.backingFloor = cache.backingGeneration
            }
            for id in ids {
                cache.backingKeys[id] = nil
                cache.backingChanges[id] = cache.backingGeneration
            }
        }
    }

    var backingGeneration: UInt64 { state.withLock { $0.backingGeneration } }

    func lookup<K: Hashable & Sendable, V: Sendable>(_ map: KeyPath<ReadCache, [K: V]>, _ key: K) -> V? {
        state.withLock { $0[keyPath: map][key] }
    }

    func keep<K: Hashable & Sendable, V: Sendable>(
        _ map: WritableKeyPath<ReadCache, [K: V]>, _ key: K, _ value: V, readUnder generation: UInt64, backingGeneration: UInt64
    ) {
        let backingKey = key as? ReadCache.BackingKeyID
        state.withLock { cache in
            guard cache.generation == generation else { return }
            if let backingKey {
                // Forgotten since this read began: the value read may predate the change.
                if backingGeneration < cache.backingFloor || cache.backingChanges[backingKey].map({ $0 > backingGeneration }) == true { return }
            }
            if cache[keyPath: map].count >= capacity { cache[keyPath: map].removeAll() }
            cache[keyPath: map][key] = value
        }
    }

    var count: Int {
        state.withLock { cache in
            cache.keys.count + cache.backingKeys.count + cache.aliasesByName.count + cache.aliasesOfKey.count + cache.tags.count
                + cache.grants.count + cache.principals.count + cache.accessKeys.count + cache.identityPolicies.count
        }
    }
}
