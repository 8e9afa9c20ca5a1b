public import Foundation
import Logging

/// Custom key stores: other PKCS#11 tokens, declared in Trent's configuration, in which KMS keys live as
/// persistent token objects (origin AWS_CLOUDHSM), or which hold objects an operator made and KMS keys
/// reference by label or id (origin EXTERNAL_KEY_STORE, XksKeyId).
///
/// Connection states are per process and kept here; a store an operator connected is connected again when
/// Trent starts (``reconnectCustomKeyStores()``).
extension KeyManagementService {
    public static let maximumCustomKeyStoresPerAccount = 10

    public struct CreateCustomKeyStoreRequest: Sendable {
        public var name: String?
        public var clusterID: String?
        public var trustAnchorCertificate: String?
        public var password: String?
        public var type: String?
        /// Whether any XksProxy* member was sent.
        public var hasExternalKeyStoreMembers: Bool

        public init(
            name: String?, clusterID: String?, trustAnchorCertificate: String?, password: String?, type: String?,
            hasExternalKeyStoreMembers: Bool = false
        ) {
            self.name = name
            self.clusterID = clusterID
            self.trustAnchorCertificate = trustAnchorCertificate
            self.password = password
            self.type = type
            self.hasExternalKeyStoreMembers = hasExternalKeyStoreMembers
        }
    }

    public struct UpdateCustomKeyStoreRequest: Sendable {
        public var id: String?
        public var newName: String?
        public var password: String?
        public var clusterID: String?
        public var hasExternalKeyStoreMembers: Bool

        public init(id: String?, newName: String?, password: String?, clusterID: String?, hasExternalKeyStoreMembers: Bool = false) {
            self.id = id
            self.newName = newName
            self.password = password
            self.clusterID = clusterID
            self.hasExternalKeyStoreMembers = hasExternalKeyStoreMembers
        }
    }

    // MARK: Operations

    public func createCustomKeyStore(_ request: CreateCustomKeyStoreRequest, caller: Caller) async throws -> String {
        guard let name = request.name else { throw KMSError.missing("customKeyStoreName") }
        try validateLength(name.utf8.count, "customKeyStoreName", min: 1, max: 256)
        let type = try request.type.map { text throws(KMSError) in try validateEnum(text, "customKeyStoreType", as: CustomKeyStoreType.self) } ?? .awsCloudHSM
        guard type == .awsCloudHSM else {
            throw KMSError(.unsupportedOperation, "Trent has no external key store proxy: custom key stores are PKCS#11 tokens of type AWS_CLOUDHSM.")
        }
        if request.hasExternalKeyStoreMembers {
            throw KMSError(.validation, "XksProxy parameters are valid only for custom key stores of type EXTERNAL_KEY_STORE.")
        }
        guard let clusterID = request.clusterID else { throw KMSError(.validation, "CloudHsmClusterId is required for an AWS_CLOUDHSM key store.") }
        try validateClusterID(clusterID)
        guard let certificate = request.trustAnchorCertificate else {
            throw KMSError(.validation, "TrustAnchorCertificate is required for an AWS_CLOUDHSM key store.")
        }
        try validateLength(certificate.utf8.count, "trustAnchorCertificate", min: 1, max: 5000)
        guard let password = request.password else { throw KMSError(.validation, "KeyStorePassword is required for an AWS_CLOUDHSM key store.") }
        try validatePassword(password)
        try await authorizeAccountAction("kms:CreateCustomKeyStore", caller: caller)
        let stores = try requireCustomKeyStores()

        if try await stores.metadata.customKeyStore(named: name, account: caller.accountID) != nil {
            throw KMSError(.customKeyStoreNameInUse, "A custom key store named '\(name)' already exists in this account.")
        }
        guard stores.tokens.isDeclared(clusterID) else {
            throw KMSError(.cloudHsmClusterNotFound, "No PKCS#11 token is declared as cluster '\(clusterID)' in Trent's configuration (keyStores).")
        }
        for related in stores.tokens.relatedClusters(of: clusterID) {
            if let other = try await stores.metadata.customKeyStore(usingCluster: related) {
                // Another account's store is not named to this caller.
                let user = other.accountID == caller.accountID ? "custom key store \(other.id)" : "another custom key store"
                throw KMSError(.cloudHsmClusterInUse, "The token of cluster '\(clusterID)' is already used by \(user).")
            }
        }
        try await requireActive(clusterID, stores)
        guard stores.tokens.trustAnchorMatches(clusterID, certificate: certificate) else {
            throw KMSError(.incorrectTrustAnchor, "The trust anchor certificate is not the one declared for cluster '\(clusterID)'.")
        }
        guard try await stores.metadata.customKeyStores(account: caller.accountID).count < Self.maximumCustomKeyStoresPerAccount else {
            throw KMSError(.limitExceeded, "An account can have at most \(Self.maximumCustomKeyStoresPerAccount) custom key stores.")
        }
        let id = CustomKeyStoreRecord.newID()
        let record = CustomKeyStoreRecord(
            id: id, accountID: caller.accountID, name: name, clusterID: clusterID, trustAnchorCertificate: certificate,
            sealedPassword: try await sealPassword(password, storeID: id), creationDate: clock.now())
        do {
            try await stores.metadata.insertCustomKeyStore(record)
        } catch MetadataStoreError.duplicate {
            throw KMSError(.customKeyStoreNameInUse, "A custom key store named '\(name)' already exists in this account.")
        }
        logger.info("created custom key store", metadata: ["kms.custom_key_store.id": "\(id)", "kms.cluster.id": "\(clusterID)"])
        return id
    }

    public func describeCustomKeyStores(
        id: String?, name: String?, limit: Int?, marker: String?, caller: Caller
    ) async throws -> Page<CustomKeyStoreDescription> {
        if let id { try validateLength(id.utf8.count, "customKeyStoreId", min: 1, max: 64) }
        if let name { try validateLength(name.utf8.count, "customKeyStoreName", min: 1, max: 256) }
        let limit = limit ?? 100
        try validateRange(limit, "limit", min: 1, max: 1000)
        if let marker { try validateLength(marker.utf8.count, "marker", min: 1, max: 1024) }
        if id != nil && name != nil {
            throw KMSError(.validation, "Specify either CustomKeyStoreId or CustomKeyStoreName, not both.")
        }
        try await authorizeAccountAction("kms:DescribeCustomKeyStores", caller: caller)
        let stores = try requireCustomKeyStores()
        var records: [CustomKeyStoreRecord]
        if let id {
            records = [try await customKeyStore(id, caller: caller)]
        } else if let name {
            guard let record = try await stores.metadata.customKeyStore(named: name, account: caller.accountID) else {
                throw KMSError(.customKeyStoreNotFound, "No custom key store named '\(name)' exists in this account.")
            }
            records = [record]
        } else {
            records = try await stores.metadata.customKeyStores(account: caller.accountID)
        }
        if let marker {
            guard let index = records.firstIndex(where: { $0.id == marker }) else {
                throw KMSError(.invalidMarker, "The marker '\(marker)' is not valid.")
            }
            records = Array(records[(index + 1)...])
        }
        let page = Array(records.prefix(limit))
        var described: [CustomKeyStoreDescription] = []
        for record in page {
            var (state, error) = await stores.connections.state(of: record.id)
            if state == .connected, let failure = stores.tokens.connectionFailure(storeID: record.id) { (state, error) = (.failed, failure) }
            described.append(CustomKeyStoreDescription(record: record, state: state, connectionError: state == .failed ? error : nil))
        }
        return Page(items: described, nextMarker: records.count > page.count ? page.last?.id : nil)
    }

    public func updateCustomKeyStore(_ request: UpdateCustomKeyStoreRequest, caller: Caller) async throws {
        guard let id = request.id else { throw KMSError.missing("customKeyStoreId") }
        try validateLength(id.utf8.count, "customKeyStoreId", min: 1, max: 64)
        if let newName = request.newName { try validateLength(newName.utf8.count, "newCustomKeyStoreName", min: 1, max: 256) }
        if let password = request.password { try validatePassword(password) }
        if let clusterID = request.clusterID { try validateClusterID(clusterID) }
        if request.hasExternalKeyStoreMembers {
            throw KMSError(.validation, "XksProxy parameters are valid only for custom key stores of type EXTERNAL_KEY_STORE.")
        }
        try await authorizeAccountAction("kms:UpdateCustomKeyStore", caller: caller)
        let stores = try requireCustomKeyStores()
        var record = try await customKeyStore(id, caller: caller)
        let (state, _) = await stores.connections.state(of: id)
        let onlyName = request.password == nil && request.clusterID == nil
        guard state == .disconnected || (onlyName && state == .connected) else {
            throw KMSError(
                .customKeyStoreInvalidState,
                onlyName
                    ? "Custom key store \(id) is \(state.rawValue); its name can be changed only when it is CONNECTED or DISCONNECTED."
                    : "Custom key store \(id) is \(state.rawValue); disconnect it before changing its password or cluster.")
        }
        if let newName = request.newName, newName != record.name {
            if try await stores.metadata.customKeyStore(named: newName, account: caller.accountID) != nil {
                throw KMSError(.customKeyStoreNameInUse, "A custom key store named '\(newName)' already exists in this account.")
            }
            record.name = newName
        }
        if let clusterID = request.clusterID, clusterID != record.clusterID {
            guard stores.tokens.isDeclared(clusterID) else {
                throw KMSError(.cloudHsmClusterNotFound, "No PKCS#11 token is declared as cluster '\(clusterID)' in Trent's configuration (keyStores).")
            }
            guard stores.tokens.relatedClusters(of: record.clusterID).contains(clusterID) else {
                throw KMSError(
                    .cloudHsmClusterNotRelated,
                    "Cluster '\(clusterID)' is another token than cluster '\(record.clusterID)': a key store can move only to a declaration of the same token.")
            }
            try await requireActive(clusterID, stores)
            record.clusterID = clusterID
        }
        if let password = request.password {
            record.sealedPassword = try await sealPassword(password, storeID: id)
        }
        do {
            try await stores.metadata.updateCustomKeyStore(record)
        } catch MetadataStoreError.duplicate {
            throw KMSError(.customKeyStoreNameInUse, "A custom key store named '\(record.name)' already exists in this account.")
        }
    }

    /// Opens the store's token and logs in. As in AWS, a failed connection is no error of the request: the
    /// store becomes FAILED and DescribeCustomKeyStores tells why. Unlike AWS, the attempt is over when the
    /// call returns (a PKCS#11 login takes milliseconds), so the store is never seen CONNECTING for long.
    public func connectCustomKeyStore(_ id: String?, caller: Caller) async throws {
        guard let id else { throw KMSError.missing("customKeyStoreId") }
        try validateLength(id.utf8.count, "customKeyStoreId", min: 1, max: 64)
        try await authorizeAccountAction("kms:ConnectCustomKeyStore", caller: caller)
        let stores = try requireCustomKeyStores()
        var record = try await customKeyStore(id, caller: caller)
        let previous = try await stores.connections.begin(
            id, allowedFrom: [.disconnected, .connected, .connecting], to: .connecting,
            refusal: { "Custom key store \(id) is \($0.rawValue); a FAILED store must be disconnected before it is connected again." })
        // Already connected or connecting: nothing to do, as in AWS.
        guard previous == .disconnected else { return }
        if stores.tokens.isDeclared(record.clusterID) {
            try await requireActive(record.clusterID, stores, failing: id)
        }
        let failure = await attemptConnection(record, stores)
        if failure == nil, !record.connectRequested {
            record.connectRequested = true
            try await stores.metadata.updateCustomKeyStore(record)
        }
    }

    public func disconnectCustomKeyStore(_ id: String?, caller: Caller) async throws {
        guard let id else { throw KMSError.missing("customKeyStoreId") }
        try validateLength(id.utf8.count, "customKeyStoreId", min: 1, max: 64)
        try await authorizeAccountAction("kms:DisconnectCustomKeyStore", caller: caller)
        let stores = try requireCustomKeyStores()
        var record = try await customKeyStore(id, caller: caller)
        _ = try await stores.connections.begin(
            id, allowedFrom: [.connected, .connecting, .failed], to: .disconnecting,
            refusal: { "Custom key store \(id) is \($0.rawValue) already." })
        await stores.tokens.disconnect(storeID: id)
        await stores.connections.set(id, .disconnected)
        if record.connectRequested {
            record.connectRequested = false
            try await stores.metadata.updateCustomKeyStore(record)
        }
        logger.info("disconnected custom key store", metadata: ["kms.custom_key_store.id": "\(id)"])
    }

    public func deleteCustomKeyStore(_ id: String?, caller: Caller) async throws {
        guard let id else { throw KMSError.missing("customKeyStoreId") }
        try validateLength(id.utf8.count, "customKeyStoreId", min: 1, max: 64)
        try await authorizeAccountAction("kms:DeleteCustomKeyStore", caller: caller)
        let stores = try requireCustomKeyStores()
        _ = try await customKeyStore(id, caller: caller)
        let (state, _) = await stores.connections.state(of: id)
        guard state == .disconnected else {
            throw KMSError(.customKeyStoreInvalidState, "Custom key store \(id) is \(state.rawValue); disconnect it before deleting it.")
        }
        let count = try await stores.metadata.keyCount(inCustomKeyStore: id)
        guard count == 0 else {
            throw KMSError(
                .customKeyStoreHasCMKs,
                "Custom key store \(id) still holds \(count) KMS key(s); schedule their deletion and delete the store once they are gone.")
        }
        try await stores.metadata.deleteCustomKeyStore(id)
        logger.info("deleted custom key store", metadata: ["kms.custom_key_store.id": "\(id)"])
    }

    /// Connects, at startup, every store an operator left connected. Failures leave the store FAILED.
    public func reconnectCustomKeyStores() async {
        guard let stores = customKeyStores else { return }
        do {
            for record in try await stores.metadata.customKeyStoresToReconnect() {
                await stores.connections.set(record.id, .connecting)
                if let failure = await attemptConnection(record, stores) {
                    logger.warning(
                        "could not reconnect custom key store at startup",
                        metadata: ["kms.custom_key_store.id": "\(record.id)", "kms.connection_error": "\(failure.rawValue)"])
                }
            }
        } catch {
            logger.error("could not list custom key stores to reconnect", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Keys in custom key stores

    /// Where CreateKey puts a key of a custom key store, checked before anything is made.
    struct CustomKeyStorePlacement: Sendable {
        var store: CustomKeyStoreRecord
        var xksKeyID: String?
    }

    /// Checks CustomKeyStoreId, Origin and XksKeyId together; nil for keys Trent keeps itself.
    func customKeyStorePlacement(
        storeID: String?, xksKeyID: String?, origin: KeyOrigin, keySpec: KeySpec, multiRegion: Bool?, caller: Caller
    ) async throws -> CustomKeyStorePlacement? {
        if let xksKeyID {
            try validateLength(xksKeyID.utf8.count, "xksKeyId", min: 1, max: 128)
            guard xksKeyID.utf8.allSatisfy({ $0.isASCIIAlphanumeric || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") }) else {
                throw KMSError.constraint("xksKeyId", "Member must satisfy regular expression pattern: ^[a-zA-Z0-9-_.]+$", value: xksKeyID)
            }
        }
        if let storeID { try validateLength(storeID.utf8.count, "customKeyStoreId", min: 1, max: 64) }
        switch origin {
        case .awsKMS, .external:
            guard storeID == nil else {
                throw KMSError(.validation, "A key in a custom key store needs Origin AWS_CLOUDHSM (Trent generates it in the token) or EXTERNAL_KEY_STORE (with XksKeyId).")
            }
            guard xksKeyID == nil else { throw KMSError(.validation, "XksKeyId is valid only with Origin EXTERNAL_KEY_STORE.") }
            return nil
        case .awsCloudHSM:
            guard storeID != nil else { throw KMSError(.validation, "Origin AWS_CLOUDHSM needs a CustomKeyStoreId.") }
            guard xksKeyID == nil else { throw KMSError(.validation, "XksKeyId is valid only with Origin EXTERNAL_KEY_STORE.") }
        case .externalKeyStore:
            guard storeID != nil else { throw KMSError(.validation, "Origin EXTERNAL_KEY_STORE needs a CustomKeyStoreId.") }
            guard xksKeyID != nil else { throw KMSError(.validation, "Origin EXTERNAL_KEY_STORE needs an XksKeyId.") }
        }
        guard keySpec == .symmetricDefault else {
            throw KMSError(.unsupportedOperation, "Keys in custom key stores must have KeySpec SYMMETRIC_DEFAULT, not \(keySpec.rawValue).")
        }
        if multiRegion == true {
            throw KMSError(.unsupportedOperation, "Multi-Region keys cannot be created in a custom key store.")
        }
        guard let storeID else { return nil }
        let stores = try requireCustomKeyStores()
        let store = try await customKeyStore(storeID, caller: caller)
        let (state, _) = await stores.connections.state(of: store.id)
        guard state == .connected, stores.tokens.isConnected(storeID: store.id) else {
            throw KMSError(.customKeyStoreInvalidState, "Custom key store \(store.id) is \(state.rawValue); keys can be created only in a CONNECTED store.")
        }
        if let xksKeyID, let existing = try await stores.metadata.customKeyStoreKey(store: store.id, xksKeyID: xksKeyID) {
            throw KMSError(.xksKeyAlreadyInUse, "XksKeyId '\(xksKeyID)' is already the key material of \(ServiceLocation.keyARN(existing.keyID, account: store.accountID, region: location.region(of: caller))).")
        }
        return CustomKeyStorePlacement(store: store, xksKeyID: xksKeyID)
    }

    /// Makes (or finds) the key's token object and stores the key with its link to it.
    func insertNewKey(_ key: KeyRecord, tags: [Tag], in placement: CustomKeyStorePlacement) async throws {
        let stores = try requireCustomKeyStores()
        let storeID = placement.store.id
        let object: TokenObjectSelector
        if let xksKeyID = placement.xksKeyID {
            object = try await stores.tokens.findKey(storeID: storeID, xksKeyID: xksKeyID)
        } else {
            object = try await stores.tokens.generateKey(storeID: storeID, keyID: key.id)
        }
        let placeholder = BackingKeyRecord(
            keyID: key.id, version: 1, wrappedKey: [], binding: [], wrappingKeyLabel: "custom-key-store:\(storeID)", creationDate: key.creationDate)
        let link = CustomKeyStoreKeyRecord(keyID: key.id, storeID: storeID, object: object, xksKeyID: placement.xksKeyID)
        do {
            try await stores.metadata.insertKey(key, backingKey: placeholder, tags: tags, in: link)
        } catch {
            if link.isOwnedByTrent { try? await stores.tokens.destroyKey(storeID: storeID, object: object) }
            throw error
        }
        logger.info("created key in custom key store", metadata: ["kms.key.id": "\(key.id)", "kms.custom_key_store.id": "\(storeID)"])
    }

    /// Where the material of a key of a custom key store is, checked usable: nil for keys Trent keeps itself. A key
    /// of a store that is not connected, or whose token stopped answering, is `KMSInvalidStateException`, as in AWS.
    func customKeyStoreObject(of key: KeyRecord) async throws -> TokenObjectReference? {
        guard key.origin == .awsCloudHSM || key.origin == .externalKeyStore else { return nil }
        let stores = try requireCustomKeyStores()
        guard let link = try await stores.metadata.customKeyStoreKey(key.id) else {
            throw KMSError(.internalFailure, "\(arn(key)) belongs to no custom key store.")
        }
        guard stores.tokens.isConnected(storeID: link.storeID) else {
            throw KMSError(.invalidState, "\(arn(key)) is unavailable: its custom key store \(link.storeID) is not connected.")
        }
        if let failure = stores.tokens.connectionFailure(storeID: link.storeID) {
            throw KMSError(.invalidState, "\(arn(key)) is unavailable: the HSM of its custom key store \(link.storeID) is not answering (\(failure.rawValue)).")
        }
        return TokenObjectReference(storeID: link.storeID, object: link.object)
    }

    /// What DescribeKey and CreateKey show for a key of a custom key store; nil for other keys.
    public func customKeyStoreView(of key: KeyRecord) async throws -> CustomKeyStoreKeyView? {
        guard key.origin == .awsCloudHSM || key.origin == .externalKeyStore, let stores = customKeyStores,
            let link = try await stores.metadata.customKeyStoreKey(key.id)
        else { return nil }
        let store = try await stores.metadata.customKeyStore(link.storeID)
        return CustomKeyStoreKeyView(
            storeID: link.storeID, clusterID: link.xksKeyID == nil ? store?.clusterID : nil, xksKeyID: link.xksKeyID,
            unavailable: !stores.tokens.isConnected(storeID: link.storeID) || stores.tokens.connectionFailure(storeID: link.storeID) != nil)
    }

    /// Destroys the token object Trent generated for a key whose deletion window ended. Objects an operator
    /// made are left alone; with the store disconnected, the object is left behind and logged (as AWS leaves
    /// orphaned key material in the cluster).
    func releaseCustomKeyStoreObject(of key: KeyRecord) async {
        guard key.origin == .awsCloudHSM || key.origin == .externalKeyStore, let stores = customKeyStores,
            let link = try? await stores.metadata.customKeyStoreKey(key.id), link.isOwnedByTrent
        else { return }
        guard stores.tokens.isConnected(storeID: link.storeID) else {
            logger.warning(
                "custom key store is disconnected: the deleted key's token object stays in the token; delete it with the token's tools",
                metadata: ["kms.key.id": "\(key.id)", "kms.custom_key_store.id": "\(link.storeID)"])
            return
        }
        do {
            try await stores.tokens.destroyKey(storeID: link.storeID, object: link.object)
        } catch {
            logger.warning(
                "could not destroy the deleted key's token object; delete it with the token's tools",
                metadata: ["kms.key.id": "\(key.id)", "kms.custom_key_store.id": "\(link.storeID)", "error": "\(error)"])
        }
    }

    /// GenerateRandom with a CustomKeyStoreId: bytes from that store's token.
    func generateRandom(count: Int, inCustomKeyStore id: String, caller: Caller) async throws -> [UInt8] {
        try validateLength(id.utf8.count, "customKeyStoreId", min: 1, max: 64)
        let stores = try requireCustomKeyStores()
        let store = try await customKeyStore(id, caller: caller)
        guard stores.tokens.isConnected(storeID: store.id) else {
            let (state, _) = await stores.connections.state(of: store.id)
            throw KMSError(.customKeyStoreInvalidState, "Custom key store \(store.id) is \(state.rawValue); GenerateRandom needs it CONNECTED.")
        }
        return try await stores.tokens.generateRandom(storeID: store.id, count: count)
    }

    // MARK: Shared steps

    func requireCustomKeyStores() throws(KMSError) -> CustomKeyStoreSupport {
        guard let customKeyStores else {
            throw KMSError(.unsupportedOperation, "This Trent's metadata store keeps no custom key stores.")
        }
        return customKeyStores
    }

    /// A store of the caller's account (stores are never shared across accounts, as in AWS).
    func customKeyStore(_ id: String, caller: Caller) async throws -> CustomKeyStoreRecord {
        let stores = try requireCustomKeyStores()
        guard let record = try await stores.metadata.customKeyStore(id), record.accountID == caller.accountID else {
            throw KMSError(.customKeyStoreNotFound, "Custom key store '\(id)' does not exist in this account.")
        }
        return record
    }

    private func authorizeAccountAction(_ action: String, caller: Caller) async throws {
        try await authorizer.authorize(AuthorizationRequest(action), caller: caller)
        guard !caller.accountID.isEmpty else {
            throw KMSError(.accessDenied, "User: \(caller.principalARN) is not authorized to perform: \(action) on resource: * because it belongs to no account")
        }
    }

    private func validateClusterID(_ clusterID: String) throws(KMSError) {
        try validateLength(clusterID.utf8.count, "cloudHsmClusterId", min: 19, max: 24)
        let suffix = clusterID.utf8.dropFirst(8)
        guard clusterID.hasPrefix("cluster-"), (11...16).contains(suffix.count),
            suffix.allSatisfy({ (UInt8(ascii: "2")...UInt8(ascii: "7")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) })
        else {
            throw KMSError.constraint("cloudHsmClusterId", "Member must satisfy regular expression pattern: cluster-[2-7a-zA-Z]{11,16}", value: clusterID)
        }
    }

    /// The value is sensitive: never echoed in the message.
    private func validatePassword(_ password: String) throws(KMSError) {
        try validateLength(password.utf8.count, "keyStorePassword", min: 7, max: 32)
    }

    private func sealPassword(_ password: String, storeID: String) async throws -> SealedData {
        try await provider.seal(Array(password.utf8), additionalData: Self.passwordBinding(storeID))
    }

    private static func passwordBinding(_ storeID: String) -> [UInt8] { Array("trent.custom-key-store.password.v1:\(storeID)".utf8) }

    private func requireActive(_ clusterID: String, _ stores: CustomKeyStoreSupport, failing storeID: String? = nil) async throws {
        switch await stores.tokens.availability(of: clusterID) {
        case .active:
            return
        case .notActive(let reason):
            if let storeID { await stores.connections.set(storeID, .disconnected) }
            throw KMSError(.cloudHsmClusterNotActive, "The token of cluster '\(clusterID)' is not available: \(reason)")
        case .invalidConfiguration(let reason):
            if let storeID { await stores.connections.set(storeID, .disconnected) }
            throw KMSError(.cloudHsmClusterInvalidConfiguration, "The token of cluster '\(clusterID)' cannot serve a key store: \(reason)")
        }
    }

    /// Unseals the PIN and connects; records CONNECTED, or FAILED with its reason.
    @discardableResult
    private func attemptConnection(_ record: CustomKeyStoreRecord, _ stores: CustomKeyStoreSupport) async -> CustomKeyStoreConnectionError? {
        let failure: CustomKeyStoreConnectionError?
        do {
            let pin = try await provider.unseal(record.sealedPassword, additionalData: Self.passwordBinding(record.id))
            failure = stores.tokens.isDeclared(record.clusterID)
                ? await stores.tokens.connect(storeID: record.id, clusterID: record.clusterID, pin: pin)
                : .clusterNotFound
        } catch {
            logger.error("could not unseal a custom key store's password", metadata: ["kms.custom_key_store.id": "\(record.id)", "error": "\(error)"])
            failure = .internalError
        }
        if let failure {
            await stores.connections.set(record.id, .failed, error: failure)
            logger.warning("custom key store connection failed", metadata: ["kms.custom_key_store.id": "\(record.id)", "kms.connection_error": "\(failure.rawValue)"])
        } else {
            await stores.connections.set(record.id, .connected)
            logger.info("connected custom key store", metadata: ["kms.custom_key_store.id": "\(record.id)"])
        }
        return failure
    }
}

/// What the service needs for custom key stores: where they are kept, their tokens, and their connection states.
struct CustomKeyStoreSupport: Sendable {
    let metadata: any CustomKeyStoreMetadata
    let tokens: any CustomKeyStoreTokens
    let connections = CustomKeyStoreConnections()
}

/// The connection state of each store in this process; DISCONNECTED unless connected since start.
actor CustomKeyStoreConnections {
    private var states: [String: (CustomKeyStoreConnectionState, CustomKeyStoreConnectionError?)] = [:]

    func state(of id: String) -> (CustomKeyStoreConnectionState, CustomKeyStoreConnectionError?) {
        states[id] ?? (.disconnected, nil)
    }

    func set(_ id: String, _ state: CustomKeyStoreConnectionState, error: CustomKeyStoreConnectionError? = nil) {
        states[id] = (state, error)
    }

    /// Moves to `next` if the store is in one of `allowed`, atomically; returns the state it was in.
    /// `refusal` words the CustomKeyStoreInvalidStateException for the state the store is in.
    func begin(
        _ id: String, allowedFrom allowed: Set<CustomKeyStoreConnectionState>, to next: CustomKeyStoreConnectionState,
        refusal: @Sendable (CustomKeyStoreConnectionState) -> String
    ) throws(KMSError) -> CustomKeyStoreConnectionState {
        let (current, _) = state(of: id)
        guard allowed.contains(current) else {
            throw KMSError(.customKeyStoreInvalidState, refusal(current))
        }
        if current != .connected { states[id] = (next, nil) }
        return current
    }
}

/// Whether a declared token can serve a key store right now.
public enum CustomKeyStoreTokenAvailability: Sendable {
    case active
    /// CloudHsmClusterNotActiveException: the module does not load, or shows no token with the label.
    case notActive(String)
    /// CloudHsmClusterInvalidConfigurationException: the token lacks a mechanism key stores need.
    case invalidConfiguration(String)
}

/// Tokens for a Trent whose configuration declares none.
public struct NoCustomKeyStoreTokens: CustomKeyStoreTokens {
    public init() {}
    public func isDeclared(_ clusterID: String) -> Bool { false }
    public func relatedClusters(of clusterID: String) -> [String] { [] }
    public func trustAnchorMatches(_ clusterID: String, certificate: String) -> Bool { false }
    public func availability(of clusterID: String) async -> CustomKeyStoreTokenAvailability { .notActive("not declared") }
    public func connect(storeID: String, clusterID: String, pin: [UInt8]) async -> CustomKeyStoreConnectionError? { .clusterNotFound }
    public func disconnect(storeID: String) async {}
    public func isConnected(storeID: String) -> Bool { false }
    public func connectionFailure(storeID: String) -> CustomKeyStoreConnectionError? { nil }
    public func generateKey(storeID: String, keyID: KeyID) async throws -> TokenObjectSelector { throw Self.unavailable }
    public func findKey(storeID: String, xksKeyID: String) async throws -> TokenObjectSelector { throw Self.unavailable }
    public func destroyKey(storeID: String, object: TokenObjectSelector) async throws { throw Self.unavailable }
    public func generateRandom(storeID: String, count: Int) async throws -> [UInt8] { throw Self.unavailable }
    static var unavailable: KMSError { KMSError(.customKeyStoreInvalidState, "The custom key store is not connected.") }
}

extension UInt8 {
    fileprivate var isASCIIAlphanumeric: Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(self)
            || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(self)
    }
}

extension KMSError.Code {
    public static let customKeyStoreNameInUse = KMSError.Code(rawValue: "CustomKeyStoreNameInUseException")
    public static let customKeyStoreNotFound = KMSError.Code(rawValue: "CustomKeyStoreNotFoundException")
    public static let customKeyStoreInvalidState = KMSError.Code(rawValue: "CustomKeyStoreInvalidStateException")
    public static let customKeyStoreHasCMKs = KMSError.Code(rawValue: "CustomKeyStoreHasCMKsException")
    public static let cloudHsmClusterNotFound = KMSError.Code(rawValue: "CloudHsmClusterNotFoundException")
    public static let cloudHsmClusterInUse = KMSError.Code(rawValue: "CloudHsmClusterInUseException")
    public static let cloudHsmClusterNotActive = KMSError.Code(rawValue: "CloudHsmClusterNotActiveException")
    public static let cloudHsmClusterNotRelated = KMSError.Code(rawValue: "CloudHsmClusterNotRelatedException")
    public static let cloudHsmClusterInvalidConfiguration = KMSError.Code(rawValue: "CloudHsmClusterInvalidConfigurationException")
    public static let incorrectTrustAnchor = KMSError.Code(rawValue: "IncorrectTrustAnchorException")
    public static let xksKeyNotFound = KMSError.Code(rawValue: "XksKeyNotFoundException")
    public static let xksKeyInvalidConfiguration = KMSError.Code(rawValue: "XksKeyInvalidConfigurationException")
    public static let xksKeyAlreadyInUse = KMSError.Code(rawValue: "XksKeyAlreadyInUseException")
}
