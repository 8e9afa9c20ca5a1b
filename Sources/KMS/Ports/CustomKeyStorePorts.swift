/// Where custom key stores and the link from each of their KMS keys to its token object live. The SQLite
/// metadata store implements it next to `MetadataStore`; a store without it has no custom key stores.
public protocol CustomKeyStoreMetadata: Sendable {
    /// Throws ``MetadataStoreError/duplicate`` when the name is taken in the account.
    func insertCustomKeyStore(_ store: CustomKeyStoreRecord) async throws
    func customKeyStore(_ id: String) async throws -> CustomKeyStoreRecord?
    func customKeyStore(named name: String, account: String) async throws -> CustomKeyStoreRecord?
    /// The store (of any account) that uses the declared token `clusterID`, if any.
    func customKeyStore(usingCluster clusterID: String) async throws -> CustomKeyStoreRecord?
    /// An account's stores in creation order.
    func customKeyStores(account: String) async throws -> [CustomKeyStoreRecord]
    /// Every store an operator left connected, for reconnecting at startup.
    func customKeyStoresToReconnect() async throws -> [CustomKeyStoreRecord]
    /// Throws ``MetadataStoreError/duplicate`` when the new name is taken in the account.
    func updateCustomKeyStore(_ store: CustomKeyStoreRecord) async throws
    func deleteCustomKeyStore(_ id: String) async throws

    /// Inserts a key of a custom key store with its (placeholder) backing-key row, its tags and its link
    /// to the token object, atomically.
    func insertKey(_ key: KeyRecord, backingKey: BackingKeyRecord, tags: [Tag], in link: CustomKeyStoreKeyRecord) async throws
    /// The link of a key to its custom key store, or nil for keys Trent keeps itself. `destroyKey` removes it.
    func customKeyStoreKey(_ keyID: KeyID) async throws -> CustomKeyStoreKeyRecord?
    /// The key that references `xksKeyID` in a store, if any.
    func customKeyStoreKey(store storeID: String, xksKeyID: String) async throws -> CustomKeyStoreKeyRecord?
    /// How many KMS keys (in any state) a store holds.
    func keyCount(inCustomKeyStore storeID: String) async throws -> Int
}

/// The PKCS#11 tokens behind custom key stores. Which tokens exist is the operator's decision, made in
/// Trent's configuration (each declared under a cluster id); the API only names them. Implemented in KMSHSM.
///
/// Connection state is per process: the implementation holds one logged-in token per connected store. Encryption
/// with a store's keys goes through the ``KeyProvider`` like any other key's (``BackingKeyRecord/tokenObject``).
public protocol CustomKeyStoreTokens: Sendable {
    /// Whether the configuration declares `clusterID`.
    func isDeclared(_ clusterID: String) -> Bool
    /// Every declared cluster id that names the same token as `clusterID` (same module and token label),
    /// itself included; empty when it is not declared.
    func relatedClusters(of clusterID: String) -> [String]
    /// Whether the certificate matches the one the configuration declares for the token; true when the
    /// configuration declares none.
    func trustAnchorMatches(_ clusterID: String, certificate: String) -> Bool
    /// Whether the declared token can be reached now (its module loads and shows a token with its label, which
    /// offers the mechanisms a key store needs), without logging in.
    func availability(of clusterID: String) async -> CustomKeyStoreTokenAvailability

    /// Opens the declared token for `storeID` and logs in with `pin`; returns why it failed, or nil.
    func connect(storeID: String, clusterID: String, pin: [UInt8]) async -> CustomKeyStoreConnectionError?
    /// Logs out and closes the store's sessions.
    func disconnect(storeID: String) async
    func isConnected(storeID: String) -> Bool
    /// Why a connected store cannot serve now (its token stopped answering and cannot be logged in again), or nil.
    /// The store shows FAILED with this code, and its keys are unavailable, until the token recovers.
    func connectionFailure(storeID: String) -> CustomKeyStoreConnectionError?

    /// Generates a persistent AES-256 key for `keyID` in the store's token (sensitive, non-extractable,
    /// labelled with the key id) and returns how to find it.
    func generateKey(storeID: String, keyID: KeyID) async throws -> TokenObjectSelector
    /// Finds an operator's object by label, else by `CKA_ID` in hex; throws `XksKeyNotFoundException` or
    /// `XksKeyInvalidConfigurationException`.
    func findKey(storeID: String, xksKeyID: String) async throws -> TokenObjectSelector
    /// Destroys a key object Trent generated.
    func destroyKey(storeID: String, object: TokenObjectSelector) async throws
    func generateRandom(storeID: String, count: Int) async throws -> [UInt8]
}
