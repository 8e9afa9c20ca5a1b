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
    let authorizer: Authorizer
    let store: any MetadataStore
    let clock: any KMSClock
    let ledger: NonceLedger
    let usage = KeyUsageTracker()
    let logger: Logger
    /// Custom key stores (see KeyManagementService+CustomKeyStores.swift); nil when the store keeps none.
    let customKeyStores: CustomKeyStoreSupport?

    public init(
        configuration: Configuration, provider: any KeyProvider, store: any MetadataStore,
        clock: any KMSClock = SystemClock(), logger: Logger,
        customKeyStoreTokens: any CustomKeyStoreTokens = NoCustomKeyStoreTokens()
    ) {
        self.customKeyStores = (store as? any CustomKeyStoreMetadata).map { CustomKeyStoreSupport(metadata: $0, tokens: customKeyStoreTokens) }
        self.location = configuration.location
        self.provider = provider
        self.store = store
        self.clock = clock
        self.logger = logger
        self.authorizer = Authorizer(store: store, clock: clock)
        self.ledger = NonceLedger(
            limits: .init(budget: configuration.nonceBudget, reservationBlock: configuration.nonceReservationBlock),
            store: store, provider: provider, clock: clock)
    }

    func arn(_ key: KeyRecord) -> String { key.arn }

    // MARK: Identifiers

    private enum KeyIdentifier {
        case keyID(KeyID, account: String?)
        case aliasName(String, account: String?)
    }

    /// A key as a request named it.
    struct ResolvedKey: Sendable {
        var record: KeyRecord
        /// The alias name, when the request named the key by alias (`kms:RequestAlias`).
        var requestAlias: String?
    }

    /// Parses a key id, key ARN, alias name or alias ARN. ARNs of another Region name no key here; an ARN's
    /// account is kept, so a key of another account can be named (authorization then decides).
    private func parseIdentifier(_ text: String, member: String, region: String) throws(KMSError) -> KeyIdentifier {
        guard !text.isEmpty else { throw KMSError.constraint(member, "Member must have length greater than or equal to 1") }
        guard text.utf8.count <= 2048 else {
            throw KMSError.constraint(member, "Member must have length less than or equal to 2048")
        }
        if text.hasPrefix("arn:") {
            let parts = text.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
            guard parts.count == 6, parts[1].hasPrefix("aws"), parts[2] == "kms", Account.isValidID(String(parts[4])) else {
                throw KMSError(.notFound, "Invalid arn \(text)")
            }
            guard parts[3] == region else {
                throw KMSError(.notFound, "Key '\(text)' does not exist")
            }
            let account = String(parts[4])
            let resource = String(parts[5])
            if resource.hasPrefix("key/"), let id = KeyID(String(resource.dropFirst(4)), region: region) { return .keyID(id, account: account) }
            if resource.hasPrefix("alias/") { return .aliasName(resource, account: account) }
            throw KMSError(.notFound, "Invalid arn \(text)")
        }
        if text.hasPrefix("alias/") { return .aliasName(text, account: nil) }
        if let id = KeyID(text, region: region) { return .keyID(id, account: nil) }
        throw KMSError(.notFound, "Invalid keyId '\(text)'")
    }

    /// Finds the key `identifier` names. A bare key id or alias name means the caller's own account, as in AWS;
    /// ARNs may name another account. Cryptographic operations and DescribeKey accept aliases; key management
    /// operations take a key id or key ARN only. Keys and aliases of another Region are not found, as in AWS.
    func resolveKey(_ identifier: String, member: String = "keyId", allowAlias: Bool, caller: Caller) async throws -> ResolvedKey {
        let region = location.region(of: caller)
        switch try parseIdentifier(identifier, member: member, region: region) {
        case .keyID(let id, let account):
            let key = try await store.key(id)
            // Services calling on their own behalf belong to no account: they name keys by id under their grants.
            let expectedAccount = account ?? (caller.principalKind == .service && caller.viaService == nil ? key?.accountID : caller.accountID)
            guard let key, key.accountID == expectedAccount, key.region == region else {
                throw KMSError(
                    .notFound, "Key '\(ServiceLocation.keyARN(id, account: expectedAccount ?? caller.accountID, region: region))' does not exist")
            }
            return ResolvedKey(record: key, requestAlias: nil)
        case .aliasName(let name, let account):
            guard allowAlias else {
                throw KMSError(.notFound, "Invalid keyId '\(identifier)': this operation takes a key ID or key ARN, not an alias")
            }
            let account = account ?? caller.accountID
            if let alias = try await store.alias(named: name, account: account, region: region), let key = try await store.key(alias.targetKeyID) {
                return ResolvedKey(record: key, requestAlias: name)
            }
            if let managed = try await awsManagedKey(for: name, account: account, caller: caller) {
                return ResolvedKey(record: managed, requestAlias: name)
            }
            throw KMSError(.notFound, "Alias '\(ServiceLocation.aliasARN(name, account: account, region: region))' is not found.")
        }
    }

    // MARK: State rules

    /// Cryptographic operations need an enabled key.
    func requireEnabled(_ key: KeyRecord) throws(KMSError) {
        switch key.state {
        case .enabled: return
        case .disabled: throw KMSError(.disabled, "\(arn(key)) is disabled.")
        case .pendingDeletion, .pendingReplicaDeletion: throw KMSError(.invalidState, "\(arn(key)) is pending deletion.")
        case .pendingImport: throw KMSError(.invalidState, "\(arn(key)) is pending import.")
        default: throw KMSError(.invalidState, "\(arn(key)) is \(key.state.rawValue) and cannot be used.")
        }
    }

    /// Management operations refuse keys that are on their way out.
    func requireNotPendingDeletion(_ key: KeyRecord) throws(KMSError) {
        if key.state == .pendingDeletion || key.state == .pendingReplicaDeletion {
            throw KMSError(.invalidState, "\(arn(key)) is pending deletion.")
        }
    }

    // MARK: Bounds

    /// `value` is quoted in the message, as AWS quotes a string it refuses (tags); blobs and secrets are not.
    func validateLength(_ count: Int, _ member: String, min: Int, max: Int, value: String? = nil) throws(KMSError) {
        if count < min { throw KMSError.constraint(member, "Member must have length greater than or equal to \(min)", value: value) }
        if count > max { throw KMSError.constraint(member, "Member must have length less than or equal to \(max)", value: value) }
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

    public func rejectDryRun(_ dryRun: Bool?) throws(KMSError) {
        if dryRun == true {
            throw KMSError(.dryRun, "The request would have succeeded, but the DryRun option is set.")
        }
    }
}
