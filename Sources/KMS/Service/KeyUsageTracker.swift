public import Foundation
import Synchronization

/// The last successful cryptographic operation with a key (GetKeyLastUsage).
public struct KeyLastUsage: Sendable, Equatable {
    public var operation: String
    public var timestamp: Date
    public var requestID: String?
    public var eventID: String?

    public init(operation: String, timestamp: Date, requestID: String?, eventID: String?) {
        self.operation = operation
        self.timestamp = timestamp
        self.requestID = requestID
        self.eventID = eventID
    }
}

/// The request and CloudTrail event ids of the request being served, bound by the HTTP layer, so what the
/// service records (last usage) names the same request as the audit trail.
public struct RequestTrace: Sendable {
    public var requestID: String
    public var eventID: String

    public init(requestID: String, eventID: String) {
        self.requestID = requestID
        self.eventID = eventID
    }

    @TaskLocal public static var current: RequestTrace?
}

/// Keeps each key's last use in memory and writes it to the store in batches (at every maintenance pass and at
/// shutdown), so the cryptographic hot path never waits for a disk write. A crash loses at most the uses since
/// the last batch: this is usage telemetry, not key state. Recording takes a lock, not an actor hop.
final class KeyUsageTracker: Sendable {
    private let pending = Mutex<[KeyID: KeyLastUsage]>([:])

    func record(_ keyID: KeyID, operation: String, at date: Date) {
        let trace = RequestTrace.current
        let usage = KeyLastUsage(operation: operation, timestamp: date, requestID: trace?.requestID, eventID: trace?.eventID)
        pending.withLock { $0[keyID] = usage }
    }

    func latest(_ keyID: KeyID) -> KeyLastUsage? { pending.withLock { $0[keyID] } }

    func flush(to store: any MetadataStore) async throws {
        let batch = pending.withLock { $0 }
        guard !batch.isEmpty else { return }
        try await store.recordLastUsage(batch)
        // Keep anything recorded while the batch was being written.
        pending.withLock { pending in
            for (keyID, usage) in batch where pending[keyID] == usage { pending[keyID] = nil }
        }
    }

    func forget(_ keyID: KeyID) { pending.withLock { $0[keyID] = nil } }
}
