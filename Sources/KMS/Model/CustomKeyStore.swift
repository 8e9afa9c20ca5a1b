public import Foundation

/// The connection states of a custom key store, spelled as the API spells them.
public enum CustomKeyStoreConnectionState: String, Sendable, Codable, CaseIterable {
    case connected = "CONNECTED"
    case connecting = "CONNECTING"
    case failed = "FAILED"
    case disconnected = "DISCONNECTED"
    case disconnecting = "DISCONNECTING"
}

/// Why a connection failed (`ConnectionErrorCode`), for the codes that have a PKCS#11 meaning.
public enum CustomKeyStoreConnectionError: String, Sendable, Codable, CaseIterable {
    /// The PIN (KeyStorePassword) is wrong.
    case invalidCredentials = "INVALID_CREDENTIALS"
    /// The configuration declares no such token, or the module shows no token with its label.
    case clusterNotFound = "CLUSTER_NOT_FOUND"
    /// The module could not be loaded or the device failed.
    case networkErrors = "NETWORK_ERRORS"
    case internalError = "INTERNAL_ERROR"
    /// The user PIN is locked.
    case userLockedOut = "USER_LOCKED_OUT"
    /// The token has no user PIN set.
    case userNotFound = "USER_NOT_FOUND"
}

public enum CustomKeyStoreType: String, Sendable, Codable, CaseIterable {
    case awsCloudHSM = "AWS_CLOUDHSM"
    case externalKeyStore = "EXTERNAL_KEY_STORE"
}

/// A custom key store as the store keeps it: a PKCS#11 token that the configuration declares under a
/// cluster id, and the user PIN for it, kept only sealed under the main token's sealing key.
public struct CustomKeyStoreRecord: Sendable, Equatable {
    /// `cks-` followed by 17 hex digits, as AWS makes them.
    public var id: String
    public var accountID: String
    public var name: String
    /// The declared token (`keyStores[].cloudHsmClusterId` in Trent's configuration).
    public var clusterID: String
    public var trustAnchorCertificate: String
    /// The user PIN (KeyStorePassword), sealed; bound to the store id.
    public var sealedPassword: SealedData
    public var creationDate: Date
    /// Whether an operator asked for the store to be connected (and has not disconnected it since): such
    /// stores are connected again when Trent starts.
    public var connectRequested: Bool

    public init(
        id: String, accountID: String, name: String, clusterID: String, trustAnchorCertificate: String,
        sealedPassword: SealedData, creationDate: Date, connectRequested: Bool = false
    ) {
        self.id = id
        self.accountID = accountID
        self.name = name
        self.clusterID = clusterID
        self.trustAnchorCertificate = trustAnchorCertificate
        self.sealedPassword = sealedPassword
        self.creationDate = creationDate
        self.connectRequested = connectRequested
    }

    /// A new store id: `cks-` and 17 random hex digits.
    public static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = (0..<17).map { _ in String(UInt8.random(in: 0...15, using: &generator), radix: 16) }.joined()
        return "cks-" + digits
    }
}

/// How a KMS key in a custom key store finds its token object.
public enum TokenObjectSelector: Sendable, Equatable, Hashable {
    /// `CKA_LABEL`.
    case label(String)
    /// `CKA_ID`.
    case id([UInt8])
}

/// The token object behind a KMS key of a custom key store.
public struct CustomKeyStoreKeyRecord: Sendable, Equatable {
    public var keyID: KeyID
    public var storeID: String
    public var object: TokenObjectSelector
    /// Set for keys that reference an object the operator made (XksKeyId); Trent never destroys those.
    public var xksKeyID: String?

    public init(keyID: KeyID, storeID: String, object: TokenObjectSelector, xksKeyID: String? = nil) {
        self.keyID = keyID
        self.storeID = storeID
        self.object = object
        self.xksKeyID = xksKeyID
    }

    /// Whether Trent generated the object (and so destroys it with the key).
    public var isOwnedByTrent: Bool { xksKeyID == nil }
}

/// A custom key store with its connection state in this process, as DescribeCustomKeyStores shows it.
public struct CustomKeyStoreDescription: Sendable {
    public var record: CustomKeyStoreRecord
    public var state: CustomKeyStoreConnectionState
    /// Present when `state` is `.failed`.
    public var connectionError: CustomKeyStoreConnectionError?
}

/// What DescribeKey and CreateKey add for a key in a custom key store.
public struct CustomKeyStoreKeyView: Sendable {
    public var storeID: String
    /// For keys whose material Trent generated in the token (origin AWS_CLOUDHSM).
    public var clusterID: String?
    /// For keys that reference an operator's object (origin EXTERNAL_KEY_STORE).
    public var xksKeyID: String?
    /// The store is not connected: the key's state reads `Unavailable`, as in AWS.
    public var unavailable: Bool
}
