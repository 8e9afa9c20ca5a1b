public import Foundation

/// GetKeyLastUsage: the last successful cryptographic operation with each key.
extension KeyManagementService {
    public struct LastUsageReport: Sendable {
        public var keyID: KeyID
        public var lastUsage: KeyLastUsage?
        /// Trent tracks every key from its creation.
        public var trackingStartDate: Date
        public var keyCreationDate: Date
    }

    public func getKeyLastUsage(_ keyID: String, caller: Caller) async throws -> LastUsageReport {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        guard resolved.record.accountID == caller.accountID else {
            throw KMSError(.notFound, "Key '\(arn(resolved.record))' does not exist")
        }
        try await authorize("kms:GetKeyLastUsage", resolved, caller: caller)
        let key = resolved.record
        let lastUsage: KeyLastUsage? = if let recent = usage.latest(key.id) { recent } else { try await store.lastUsage(of: key.id) }
        return LastUsageReport(keyID: key.id, lastUsage: lastUsage, trackingStartDate: key.creationDate, keyCreationDate: key.creationDate)
    }

    /// Notes a successful cryptographic operation (kept in memory; written by ``flushKeyUsage()``).
    func recordUse(of key: KeyRecord, _ operation: String) {
        usage.record(key.id, operation: operation, at: clock.now())
    }

    /// Writes the recorded uses to the store (every maintenance pass, and at shutdown).
    public func flushKeyUsage() async throws {
        try await usage.flush(to: store)
    }
}
