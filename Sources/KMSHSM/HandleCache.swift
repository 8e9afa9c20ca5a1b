import CoreMetrics
import KMS
import PKCS11
import Synchronization

/// `trent_handle_cache_*_total{cache}`: lookups that found a working handle or not, and handles evicted to stay
/// within capacity. One set per kind of cache, made on first use and shared by every login's cache of that kind.
struct HandleCacheMetrics: Sendable {
    let hits: Counter
    let misses: Counter
    let evictions: Counter

    init(cache: String) {
        hits = Counter(label: "trent_handle_cache_hits_total", dimensions: [("cache", cache)])
        misses = Counter(label: "trent_handle_cache_misses_total", dimensions: [("cache", cache)])
        evictions = Counter(label: "trent_handle_cache_evictions_total", dimensions: [("cache", cache)])
    }

    static let workingKeys = HandleCacheMetrics(cache: "working_keys")
    static let publicKeys = HandleCacheMetrics(cache: "public_keys")
}

/// Working copies of backing keys (session objects unwrapped from their EKTs), bounded and evicted least
/// recently used first. Owned by the provider; handles never leave it.
final class HandleCache: Sendable {
    struct Entry {
        var handle: ObjectHandle
        var lastUse: UInt64
    }

    struct VersionID: Hashable {
        var keyID: KeyID
        var version: UInt32
    }

    private struct State {
        var entries: [VersionID: Entry] = [:]
        var clock: UInt64 = 0
    }

    private let state = Mutex(State())
    let capacity: Int
    private let metrics: HandleCacheMetrics

    init(capacity: Int, metrics: HandleCacheMetrics = .workingKeys) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.metrics = metrics
    }

    func handle(for id: VersionID) -> ObjectHandle? {
        let found = state.withLock { state -> ObjectHandle? in
            state.clock += 1
            guard var entry = state.entries[id] else { return nil }
            entry.lastUse = state.clock
            state.entries[id] = entry
            return entry.handle
        }
        (found == nil ? metrics.misses : metrics.hits).increment()
        return found
    }

    /// Inserts a handle. Returns the handle to use (an entry another thread inserted first wins) and the
    /// handles the caller must destroy: the loser of such a race and whatever was evicted.
    func insert(_ handle: ObjectHandle, for id: VersionID) -> (use: ObjectHandle, destroy: [ObjectHandle]) {
        let result = state.withLock { state -> (use: ObjectHandle, destroy: [ObjectHandle]) in
            state.clock += 1
            if let existing = state.entries[id] { return (existing.handle, [handle]) }
            state.entries[id] = Entry(handle: handle, lastUse: state.clock)
            guard state.entries.count > capacity else { return (handle, []) }
            // Evict the oldest tenth at once so a full cache does not pay a scan per insert.
            let evictCount = max(1, capacity / 10)
            let victims = state.entries.sorted { $0.value.lastUse < $1.value.lastUse }.prefix(evictCount).filter { $0.key != id }
            for victim in victims { state.entries[victim.key] = nil }
            return (handle, victims.map(\.value.handle))
        }
        if !result.destroy.isEmpty, result.use == handle { metrics.evictions.increment(by: result.destroy.count) }
        return result
    }

    /// Removes one entry if it still holds `handle`.
    func remove(_ id: VersionID, ifHandle handle: ObjectHandle) -> Bool {
        state.withLock { state in
            guard state.entries[id]?.handle == handle else { return false }
            state.entries[id] = nil
            return true
        }
    }

    /// Removes every version of a key and returns their handles.
    func removeAll(of keyID: KeyID) -> [ObjectHandle] {
        state.withLock { state in
            let removed = state.entries.filter { $0.key.keyID == keyID }
            for id in removed.keys { state.entries[id] = nil }
            return removed.map(\.value.handle)
        }
    }

    var count: Int { state.withLock { $0.entries.count } }
}
