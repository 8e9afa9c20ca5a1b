import GRDB
import KMS
import Synchronization

/// The store's read cache: the rows every KMS request reads (its key, the backing key, the caller's access key,
/// principal and identity policies, the key's tags, aliases and grants), kept in memory so the hot path does not
/// query SQLite.
///
/// Correctness rests on one rule: **a read never returns anything older than the database as it was when the
/// read began.** Before every cached read the store asks a dedicated connection for `PRAGMA data_version`, which
/// changes whenever any other connection commits: this process's writer or another process (`trent identity`
/// writes while the server runs). A changed version empties the whole cache. Writes through this store also
/// empty it as soon as they commit. A value read from SQLite is kept only if no emptying happened between the
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
        generation &+= 1
    }
}

/// The cache and the connection that tells when it went stale.
final class CachedReads: Sendable {
    private let state = Mutex(ReadCache())
    private let watch: DatabaseQueue?
    let capacity: Int

    /// - Parameter watch: a connection of its own on the same file; nil disables caching.
    init(watch: DatabaseQueue?, capacity: Int) {
        self.watch = watch
        self.capacity = capacity
    }

    var enabled: Bool { watch != nil && capacity > 0 }

    /// Empties the cache if anything committed since the last check; returns the generation to read under.
    func check() -> UInt64? {
        guard let watch, capacity > 0 else { return nil }
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

    func lookup<K: Hashable & Sendable, V: Sendable>(_ map: KeyPath<ReadCache, [K: V]>, _ key: K) -> V? {
        state.withLock { $0[keyPath: map][key] }
    }

    func keep<K: Hashable & Sendable, V: Sendable>(_ map: WritableKeyPath<ReadCache, [K: V]>, _ key: K, _ value: V, readUnder generation: UInt64) {
        state.withLock { cache in
            guard cache.generation == generation else { return }
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
