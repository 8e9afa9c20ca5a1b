import CoreMetrics
import Synchronization

/// Counts AES-GCM encryptions per backing-key version so that no backing key ever exceeds its nonce budget.
///
/// With random 96-bit IVs, a key is safe for about 2^32 encryptions. The ledger hands out encryptions from
/// blocks reserved durably in the store before use, so a crash loses at most the rest of a block and never
/// reuses budget. When a version's budget is spent, the ledger creates the next backing-key version in the
/// token and moves the key to it; ciphertexts name their version, so older ones still decrypt.
///
/// Claiming from a block already reserved, the common case, takes a lock and never enters the actor: an
/// actor hop per encryption was a thread hand-off per request. Only refills, rotations and new versions
/// (which wait for the store or the token) run on the actor, one at a time per key.
actor NonceLedger {
    struct Limits: Sendable {
        var budget: UInt64
        var reservationBlock: UInt64
    }

    private struct Slot {
        var used: UInt64
        var reserved: UInt64
    }

    private struct VersionID: Hashable {
        var keyID: KeyID
        var version: UInt32
    }

    private let limits: Limits
    private let store: any MetadataStore
    private let provider: any KeyProvider
    private let clock: any KMSClock

    private struct Counts {
        var slots: [VersionID: Slot] = [:]
        /// The newest version each key moved to while running (the caller's record may predate the move).
        var currentVersions: [KeyID: UInt32] = [:]
    }
    /// Changed under the lock only; a slot's `reserved` only after the store has made the reservation durable.
    private let counts = Mutex(Counts())
    /// One refill at a time per key; other callers wait for it instead of reserving twice.
    private var refills: [KeyID: Task<Void, any Error>] = [:]

    init(limits: Limits, store: any MetadataStore, provider: any KeyProvider, clock: any KMSClock) {
        precondition(limits.reservationBlock > 0 && limits.budget > 0)
        self.limits = limits
        self.store = store
        self.provider = provider
        self.clock = clock
    }

    /// Takes one encryption from the key's current backing-key version and returns that version.
    nonisolated func claimEncryption(for key: KeyRecord) async throws -> UInt32 {
        switch claimReserved(for: key) {
        case .claimed(let version): version
        case .refillNeeded: try await claimRefilling(for: key)
        }
    }

    private enum Claim {
        case claimed(UInt32)
        case refillNeeded
    }

    /// One encryption from the current version's reserved block, if any is left.
    private nonisolated func claimReserved(for key: KeyRecord) -> Claim {
        counts.withLock { counts in
            let version = max(counts.currentVersions[key.materialOwner] ?? 0, key.currentVersion)
            let id = VersionID(keyID: key.materialOwner, version: version)
            guard var slot = counts.slots[id], slot.used < slot.reserved else { return .refillNeeded }
            slot.used += 1
            counts.slots[id] = slot
            return .claimed(version)
        }
    }

    private func claimRefilling(for key: KeyRecord) async throws -> UInt32 {
        while true {
            if case .claimed(let version) = claimReserved(for: key) { return version }
            let version = max(counts.withLock { $0.currentVersions[key.materialOwner] } ?? 0, key.currentVersion)
            let id = VersionID(keyID: key.materialOwner, version: version)
            if let refill = refills[key.materialOwner] {
                try await refill.value
                continue
            }
            let renewable = key.origin == .awsKMS
            let refill = Task { try await self.refill(id, renewable: renewable) }
            refills[key.materialOwner] = refill
            defer { refills[key.materialOwner] = nil }
            try await refill.value
        }
    }

    /// Reserves the next block of `id`'s budget, or moves the key to a new version when none is left and
    /// the key's material is Trent's to renew (imported material is not).
    private func refill(_ id: VersionID, renewable: Bool) async throws {
        var slot: Slot
        if let known = counts.withLock({ $0.slots[id] }) {
            slot = known
        } else {
            // First use since start: whatever was reserved before counts as used.
            guard let record = try await store.backingKey(id.keyID, version: id.version) else {
                throw KMSError(.internalFailure, "Backing key version \(id.version) of \(id.keyID) is missing.")
            }
            slot = Slot(used: record.noncesReserved, reserved: record.noncesReserved)
        }
        if slot.reserved < limits.budget {
            let reserved = min(slot.reserved + limits.reservationBlock, limits.budget)
            try await store.reserveNonces(id.keyID, version: id.version, upTo: reserved)
            NonceMetrics.reservations.increment()
            NonceMetrics.reserved.increment(by: Int64(clamping: reserved - slot.reserved))
            counts.withLock { counts in
                // Encryptions claimed meanwhile (from the block reserved before) still count.
                let used = max(slot.used, counts.slots[id]?.used ?? 0)
                counts.slots[id] = Slot(used: used, reserved: reserved)
            }
            return
        }
        guard renewable else {
            throw KMSError(.invalidState, "The key material of \(id.keyID) is not Trent's to renew (imported, or in a custom key store) and has encrypted all it safely can (2^32 random IVs); use a new key.")
        }
        // Budget spent: a fresh backing key takes over for new encryptions.
        counts.withLock { _ = $0.slots.removeValue(forKey: id) }
        _ = try await createVersion(of: id.keyID, after: id.version, rotationType: nil)
    }

    /// Rotates a key's material: a new backing-key version takes over new encryptions. Serialised with budget
    /// refills, so two new versions never race for the same number. `change` is written with the new version, in
    /// the same transaction, where `condition` holds (a scheduled rotation's next date).
    func rotate(
        _ keyID: KeyID, type: RotationType, with change: KeyChange? = nil, if condition: KeyCondition = .any
    ) async throws -> BackingKeyRecord {
        while let refill = refills[keyID] { try await refill.value }
        let work = Task { () throws -> BackingKeyRecord in
            let stored = try await self.store.key(keyID)?.currentVersion ?? 0
            let running = self.counts.withLock { $0.currentVersions[keyID] } ?? 0
            return try await self.createVersion(
                of: keyID, after: max(stored, running), rotationType: type, with: change, if: condition)
        }
        refills[keyID] = Task { _ = try await work.value }
        defer { refills[keyID] = nil }
        return try await work.value
    }

    /// Generates the next backing-key version in the token, reserves its first block of budget, and makes it current.
    private func createVersion(
        of keyID: KeyID, after version: UInt32, rotationType: RotationType?, with change: KeyChange? = nil,
        if condition: KeyCondition = .any
    ) async throws -> BackingKeyRecord {
        let (next, overflow) = version.addingReportingOverflow(1)
        guard !overflow else { throw KMSError(.limitExceeded, "Key \(keyID) has no backing-key versions left.") }
        let material = try await provider.createBackingKey(for: keyID, version: next, kind: .aes256)
        let firstBlock = min(limits.reservationBlock, limits.budget)
        let record = BackingKeyRecord(
            keyID: keyID, version: next, wrappedKey: material.wrappedKey, binding: material.binding,
            wrappingKeyLabel: material.wrappingKeyLabel, creationDate: clock.now(), noncesReserved: firstBlock, rotationType: rotationType)
        try await store.addBackingKey(record, with: change, if: condition)
        counts.withLock { counts in
            counts.slots[VersionID(keyID: keyID, version: next)] = Slot(used: 0, reserved: firstBlock)
            counts.currentVersions[keyID] = next
        }
        return record
    }

    /// Forgets a destroyed key.
    nonisolated func forget(_ keyID: KeyID) {
        counts.withLock { counts in
            counts.slots = counts.slots.filter { $0.key.keyID != keyID }
            counts.currentVersions[keyID] = nil
        }
    }
}

/// Durable nonce reservations (`trent_nonce_reservations_total`) and the AES-GCM encryptions they reserved
/// (`trent_nonces_reserved_total`): a reservation is a store write on the first encryption of a key after a start and
/// every `nonceBudget.reservationBlock` encryptions after that.
enum NonceMetrics {
    static let reservations = Counter(label: "trent_nonce_reservations_total")
    static let reserved = Counter(label: "trent_nonces_reserved_total")
}
