import Foundation

/// How every operation changes an existing key: it writes only what it changes, under a condition the store
/// checks on the row it writes (``MetadataStore/updateKey(_:_:if:)``). A request reads the key at its start
/// (to resolve, authorize and check it) but never writes that copy back, so concurrent requests changing other
/// attributes (a description, the policy, the state, rotation, a scheduled deletion) never undo one another,
/// and a state rule such as "not pending deletion" is the one true of the row when it was written.
extension KeyManagementService {
    /// How many times a change is written again when the key left and re-entered the required state meanwhile.
    static let keyUpdateAttempts = 3

    /// Writes `change` to `key`'s row if the row satisfies `condition` when written; returns the row as written.
    ///
    /// `check` is the same rule as `condition`, with the AWS error for a key that breaks it; callers apply it to
    /// the key they read first, and this applies it to the key as it is now when the write found the condition
    /// false: the key is gone (NotFoundException), or `check` throws the error for the state it has now. Should
    /// the key satisfy the condition again by then, the write is tried again, a bounded number of times.
    func update(
        _ key: KeyRecord, _ change: KeyChange, if condition: KeyCondition, check: (KeyRecord) throws -> Void
    ) async throws -> KeyRecord {
        for _ in 0..<Self.keyUpdateAttempts {
            if let written = try await store.updateKey(key.id, change, if: condition) { return written }
            let current = try await currentKey(key)
            try check(current)
            guard condition.isSatisfied(by: current) else { break }
        }
        throw KMSError(.invalidState, "\(arn(key)) changed while the request ran; try again.")
    }

    /// The key as it is now, after a conditional write found it changed; NotFoundException when it is gone.
    func currentKey(_ key: KeyRecord) async throws -> KeyRecord {
        guard let current = try await store.key(key.id) else {
            throw KMSError(.notFound, "Key '\(arn(key))' does not exist")
        }
        return current
    }
}
