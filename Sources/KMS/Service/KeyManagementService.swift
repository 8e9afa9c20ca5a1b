public import Foundation
public import Logging

/// The KMS semantics: key states, identifiers, encryption context, bounds and the exact AWS error for
/// every mistake. Providers and stores plug in underneath; the HTTP front end sits on top.
public final class KeyManagementService: Sendable {
    public struct Configuration: Sendable {
        public var location: ServiceLocation
        /// Encryptions allowed per backing-key version (AES-GCM with random IVs: at most 2^32).
        public var nonceBudget: UInt64
        /// Encryptions reserved durably at a time; a crash forfeits at most one block.
        public var nonceReservationBlock: UInt64

        public init(location: ServiceLocation, nonceBudget: UInt64 = 1 << 32, nonceReservationBlock: UInt64 = 1 << 16) {
            self.location = location
            self.nonceBudget = nonceBudget
            self.nonceReservationBlock = nonceReservationBlock
        }
    }

    public let location: ServiceLocation
    let provider: any KeyProvider
    let store: any MetadataStore
    let clock: any KMSClock
    let ledger: NonceLedger
    let logger: Logger

    public init(
        configuration: Configuration, provider: any KeyProvider, store: any MetadataStore,
        clock: any KMSClock = SystemClock(), logger: Logger
    ) {
        self.location = configuration.location
        self.provider = provider
        self.store = store
        self.clock = clock
        self.logger = logger
        self.ledger = NonceLedger(
            limits: .init(budget: configuration.nonceBudget, reservationBlock: configuration.nonceReservationBlock),
            store: store, provider: provider, clock: clock)
    }

    func arn(_ key: KeyRecord) -> String { location.keyARN(key.id) }

    // MARK: Identifiers

    private enum KeyIdentifier {
        case keyID(KeyID)
        case aliasName(String)
    }

    /// Parses a key id, key ARN, alias name or alias ARN. ARNs of another Region or account name no key here.
    private func parseIdentifier(_ text: String, member: String) throws(KMSError) -> KeyIdentifier {
        guard !text.isEmpty else { throw KMSError.constraint(member, "Member must have length greater than or equal to 1") }
        guard text.utf8.count <= 2048 else {
            throw KMSError.constraint(member, "Member must have length less than or equal to 2048")
        }
        if text.hasPrefix("arn:") {
            let parts = text.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
            guard parts.count == 6, parts[1].hasPrefix("aws"), parts[2] == "kms" else {
                throw KMSError(.notFound, "Invalid arn \(text)")
            }
            guard parts[3] == location.region, parts[4] == location.accountID else {
                throw KMSError(.notFound, "Key '\(text)' does not exist")
            }
            let resource = String(parts[5])
            if resource.hasPrefix("key/"), let id = KeyID(String(resource.dropFirst(4))) { return .keyID(id) }
            if resource.hasPrefix("alias/") { return .aliasName(resource) }
            throw KMSError(.notFound, "Invalid arn \(text)")
        }
        if text.hasPrefix("alias/") { return .aliasName(text) }
        if let id = KeyID(text) { return .keyID(id) }
        throw KMSError(.notFound, "Invalid keyId '\(text)'")
    }

    /// Finds the key `identifier` names. Cryptographic operations and DescribeKey accept aliases; key
    /// management operations take a key id or key ARN only, as AWS does.
    func resolveKey(_ identifier: String, member: String = "keyId", allowAlias: Bool) async throws -> KeyRecord {
        switch try parseIdentifier(identifier, member: member) {
        case .keyID(let id):
            guard let key = try await store.key(id) else {
                throw KMSError(.notFound, "Key '\(location.keyARN(id))' does not exist")
            }
            return key
        case .aliasName(let name):
            guard allowAlias else {
                throw KMSError(.notFound, "Invalid keyId '\(identifier)': this operation takes a key ID or key ARN, not an alias")
            }
            guard let alias = try await store.alias(named: name), let key = try await store.key(alias.targetKeyID) else {
                throw KMSError(.notFound, "Alias '\(location.aliasARN(name))' is not found.")
            }
            return key
        }
    }

    // MARK: State rules

    /// Cryptographic operations need an enabled key.
    func requireEnabled(_ key: KeyRecord) throws(KMSError) {
        switch key.state {
        case .enabled: return
        case .disabled: throw KMSError(.disabled, "\(arn(key)) is disabled.")
        case .pendingDeletion: throw KMSError(.invalidState, "\(arn(key)) is pending deletion.")
        default: throw KMSError(.invalidState, "\(arn(key)) is \(key.state.rawValue) and cannot be used.")
        }
    }

    /// Management operations refuse keys that are on their way out.
    func requireNotPendingDeletion(_ key: KeyRecord) throws(KMSError) {
        if key.state == .pendingDeletion {
            throw KMSError(.invalidState, "\(arn(key)) is pending deletion.")
        }
    }

    // MARK: Bounds

    func validateLength(_ count: Int, _ member: String, min: Int, max: Int) throws(KMSError) {
        if count < min { throw KMSError.constraint(member, "Member must have length greater than or equal to \(min)") }
        if count > max { throw KMSError.constraint(member, "Member must have length less than or equal to \(max)") }
    }

    func validateRange(_ value: Int, _ member: String, min: Int, max: Int) throws(KMSError) {
        if value < min { throw KMSError.constraint(member, "Member must have value greater than or equal to \(min)", value: "\(value)") }
        if value > max { throw KMSError.constraint(member, "Member must have value less than or equal to \(max)", value: "\(value)") }
    }

    func validateEnum<E: RawRepresentable & CaseIterable>(_ text: String, _ member: String, as type: E.Type) throws(KMSError) -> E
    where E.RawValue == String {
        guard let value = E(rawValue: text) else {
            let allowed = E.allCases.map(\.rawValue).joined(separator: ", ")
            throw KMSError.constraint(member, "Member must satisfy enum value set: [\(allowed)]", value: text)
        }
        return value
    }

    func rejectDryRun(_ dryRun: Bool?) throws(KMSError) {
        if dryRun == true {
            throw KMSError(.dryRun, "The request would have succeeded, but the DryRun option is set.")
        }
    }
}
