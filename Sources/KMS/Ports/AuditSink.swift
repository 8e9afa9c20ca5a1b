public import JSON

/// Where audit records go: one CloudTrail-format record per request. `append` returns once the record is
/// durable, so a request is acknowledged only after its record is safely stored.
public protocol AuditSink: Sendable {
    /// - Parameter canonicalRecord: a JSON object in ``JSONValue/canonicalBytes`` form (what the trail hashes).
    func append(canonicalRecord: [UInt8]) async throws
}

extension AuditSink {
    public func append(_ record: JSONValue) async throws {
        try await append(canonicalRecord: record.canonicalBytes)
    }
}
