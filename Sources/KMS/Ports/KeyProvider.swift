/// Performs every operation that touches key material. Implementations keep the material inside a
/// hardware or software token; the service above never sees a backing key in plaintext.
///
/// Errors are ``KMSError``s: a failed authentication check is `.invalidCiphertext`, a device failure
/// `.internalFailure` or `.dependencyTimeout`.
public protocol KeyProvider: Sendable {
    /// Generates a backing key for `keyID` at `version` inside the token and returns it wrapped, bound to both.
    func createBackingKey(for keyID: KeyID, version: UInt32, kind: BackingKeyKind) async throws -> BackingKeyMaterial

    /// AES-GCM encryption under the backing key, with a fresh random IV made by or for the token.
    func encrypt(_ plaintext: [UInt8], under key: BackingKeyRecord, additionalData: [UInt8]) async throws -> SealedData

    /// AES-GCM decryption; a tag mismatch is `.invalidCiphertext`.
    func decrypt(_ sealed: SealedData, under key: BackingKeyRecord, additionalData: [UInt8]) async throws -> [UInt8]

    /// An HMAC of `message` under an HMAC backing key, computed in the token.
    func generateMac(_ message: [UInt8], under key: BackingKeyRecord, algorithm: MacAlgorithm) async throws -> [UInt8]

    /// Whether `mac` is the HMAC of `message` under the key, checked in the token.
    func verifyMac(_ message: [UInt8], mac: [UInt8], under key: BackingKeyRecord, algorithm: MacAlgorithm) async throws -> Bool

    /// Signs in the token with an asymmetric key's private key: a `.raw` message is hashed once first, a
    /// `.digest` is signed as given. ECDSA signatures come back DER-encoded.
    func sign(_ message: [UInt8], type: MessageType, under key: BackingKeyRecord, spec: KeyPairSpec, algorithm: SigningAlgorithm) async throws -> [UInt8]

    /// Whether `signature` is valid for the message under the key's public key.
    func verify(
        _ message: [UInt8], type: MessageType, signature: [UInt8], under key: BackingKeyRecord, spec: KeyPairSpec,
        algorithm: SigningAlgorithm
    ) async throws -> Bool

    /// RSAES-OAEP encryption to the key's public key.
    func encrypt(_ plaintext: [UInt8], under key: BackingKeyRecord, spec: KeyPairSpec, algorithm: RSAEncryptionAlgorithm) async throws -> [UInt8]

    /// RSAES-OAEP decryption with the private key in the token; anything that does not decode is `.invalidCiphertext`.
    func decrypt(_ ciphertext: [UInt8], under key: BackingKeyRecord, spec: KeyPairSpec, algorithm: RSAEncryptionAlgorithm) async throws -> [UInt8]

    /// ECDH in the token between the key's private key and `peerPublicKey` (a DER SubjectPublicKeyInfo on the
    /// same curve); returns the raw shared secret. A key on another curve, or not a point, is `.validation`.
    func deriveSharedSecret(peerPublicKey: [UInt8], under key: BackingKeyRecord, spec: KeyPairSpec) async throws -> [UInt8]

    /// A data key pair generated in the token for export: the private key as DER PKCS#8 and the public key as
    /// a DER SubjectPublicKeyInfo. Nothing of it stays in the token.
    func generateDataKeyPair(_ spec: KeyPairSpec) async throws -> (privateKey: [UInt8], publicKey: [UInt8])

    /// A fresh RSA key pair for GetParametersForImport, generated in the token; its private key can only unwrap.
    func createImportWrappingKey(_ spec: KeyPairSpec) async throws -> ImportWrappingKey

    /// Unwraps imported key material into the token with the wrapping key's private key and returns it as a
    /// backing key for `keyID` and `version`. With `previous` (material imported before), the new material must
    /// be the same key (`IncorrectKeyMaterialException` otherwise). Undecryptable input is `.invalidCiphertext`.
    func importKeyMaterial(
        _ encrypted: [UInt8], wrappingKey: ImportWrappingKey, algorithm: WrappingAlgorithm, for keyID: KeyID, version: UInt32,
        kind: BackingKeyKind, previous: BackingKeyRecord?
    ) async throws -> BackingKeyMaterial

    /// Why the token cannot hold KMS keys or data key pairs of `spec`, for the specs Trent knows but has no backing
    /// key for (ECC_NIST_EDWARDS25519): the UnsupportedOperationException's message. Nil when nothing is recorded.
    func unavailability(of spec: KeySpec) -> String?

    /// Bytes from the token's random number generator.
    func generateRandom(count: Int) async throws -> [UInt8]

    /// Seals one of Trent's own secrets (an access key's secret, an audit digest) under the token's sealing
    /// key, bound to `additionalData`.
    func seal(_ plaintext: [UInt8], additionalData: [UInt8]) async throws -> SealedData

    /// Opens what ``seal(_:additionalData:)`` sealed; anything altered, or other additional data, is `.invalidCiphertext`.
    func unseal(_ sealed: SealedData, additionalData: [UInt8]) async throws -> [UInt8]

    /// The sealing key's binding for a secret backing key whose binding was made the earlier way (by the key itself),
    /// once that earlier proof is checked; nil when it does not hold.
    func rebind(_ key: BackingKeyRecord, kind: BackingKeyKind) async throws -> [UInt8]?

    /// Drops every cached working copy of `keyID`'s backing keys (the key is being destroyed).
    func forget(_ keyID: KeyID) async
}

/// A freshly generated backing key, in the only form that leaves the token.
public struct BackingKeyMaterial: Sendable {
    public var wrappedKey: [UInt8]
    public var binding: [UInt8]
    public var wrappingKeyLabel: String
    /// The DER SubjectPublicKeyInfo of a key pair; nil for secret keys.
    public var publicKey: [UInt8]?

    public init(wrappedKey: [UInt8], binding: [UInt8], wrappingKeyLabel: String, publicKey: [UInt8]? = nil) {
        self.publicKey = publicKey
        self.wrappedKey = wrappedKey
        self.binding = binding
        self.wrappingKeyLabel = wrappingKeyLabel
    }
}

public struct SealedData: Sendable, Equatable {
    /// AES-GCM's 96-bit IV, which every provider's sealing uses.
    public static let ivLength = 12

    public var iv: [UInt8]
    /// Ciphertext followed by the tag.
    public var ciphertextAndTag: [UInt8]

    public init(iv: [UInt8], ciphertextAndTag: [UInt8]) {
        self.iv = iv
        self.ciphertextAndTag = ciphertextAndTag
    }
}
