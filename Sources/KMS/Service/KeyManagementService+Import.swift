public import Foundation
import Logging

/// Imported key material (keys of origin EXTERNAL): GetParametersForImport, ImportKeyMaterial,
/// DeleteImportedKeyMaterial, and the expiry of material with a ValidTo date.
extension KeyManagementService {
    public struct ImportParameters: Sendable {
        public var keyARN: String
        public var importToken: [UInt8]
        public var publicKey: [UInt8]
        public var parametersValidTo: Date
    }

    /// How long an import token and its wrapping key stay usable, as in AWS.
    static let importTokenLifetime: TimeInterval = 24 * 3600
    /// The latest ValidTo ImportKeyMaterial accepts, counted from the request.
    static let maximumMaterialLifetime: TimeInterval = 365 * 86_400

    public func getParametersForImport(
        keyID: String, wrappingAlgorithm: String?, wrappingKeySpec: String?, caller: Caller
    ) async throws -> ImportParameters {
        guard let wrappingAlgorithm else { throw KMSError.missing("wrappingAlgorithm") }
        guard let wrappingKeySpec else { throw KMSError.missing("wrappingKeySpec") }
        let algorithm = try validateEnum(wrappingAlgorithm, "wrappingAlgorithm", as: WrappingAlgorithm.self)
        guard ["RSA_2048", "RSA_3072", "RSA_4096"].contains(wrappingKeySpec), let spec = KeyPairSpec(rawValue: wrappingKeySpec) else {
            throw KMSError.constraint("wrappingKeySpec", "Member must satisfy enum value set: [RSA_2048, RSA_3072, RSA_4096, SM2]", value: wrappingKeySpec)
        }
        guard algorithm.oaepDigest != nil else {
            throw KMSError(.validation, "WrappingAlgorithm \(algorithm.rawValue) is not supported; use RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256.")
        }
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        let key = resolved.record
        try await authorize("kms:GetParametersForImport", resolved, context: importConditions(algorithm, spec), caller: caller)
        try requireExternal(key)
        try requireNotPendingDeletion(key)
        let wrappingKey = try await provider.createImportWrappingKey(spec)
        let validTo = clock.now().addingTimeInterval(Self.importTokenLifetime)
        let token = ImportToken(keyID: key.id, algorithm: algorithm, wrappingKey: wrappingKey, validTo: validTo)
        let sealed = try await provider.seal(try token.encoded(), additionalData: ImportToken.additionalData(for: key.id))
        return ImportParameters(
            keyARN: arn(key), importToken: sealed.iv + sealed.ciphertextAndTag, publicKey: wrappingKey.publicKey, parametersValidTo: validTo)
    }

    /// Returns the key's ARN.
    @discardableResult
    public func importKeyMaterial(
        keyID: String, importToken: [UInt8], encryptedKeyMaterial: [UInt8], validTo: Date?, expirationModel: String?, caller: Caller
    ) async throws -> String {
        try validateLength(importToken.count, "importToken", min: 1, max: 6144)
        try validateLength(encryptedKeyMaterial.count, "encryptedKeyMaterial", min: 1, max: 6144)
        let model = try expirationModel.map { text throws(KMSError) in try validateEnum(text, "expirationModel", as: ExpirationModel.self) } ?? .expires
        switch (model, validTo) {
        case (.expires, nil):
            throw KMSError(.validation, "A validTo date must be set if the ExpirationModel is KEY_MATERIAL_EXPIRES")
        case (.doesNotExpire, .some):
            throw KMSError(.validation, "ValidTo must be omitted when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE.")
        case (.expires, let date?):
            let now = clock.now()
            guard date > now, date <= now.addingTimeInterval(Self.maximumMaterialLifetime) else {
                throw KMSError(.validation, "ValidTo must be in the future and at most 365 days from now.")
            }
        case (.doesNotExpire, nil):
            break
        }
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        let key = resolved.record
        try await authorize(
            "kms:ImportKeyMaterial", resolved, context: ConditionContext.expirationModel(model, validTo: validTo), caller: caller)
        try requireExternal(key)
        let check = { (key: KeyRecord) throws(KMSError) in
            try self.requireNotPendingDeletion(key)
            guard key.state == .pendingImport else {
                throw KMSError(
                    .invalidState, "\(self.arn(key)) is \(key.state.rawValue); key material can be imported only into a key that is PendingImport.")
            }
        }
        try check(key)
        let token = try await openImportToken(importToken, for: key)
        guard let kind = key.keySpec.backingKeyKind else {
            throw KMSError(.unsupportedOperation, "KeySpec \(key.keySpec.rawValue) takes no imported material in Trent.")
        }
        let previous = try await store.backingKey(key.id, version: 1)
        let material = try await provider.importKeyMaterial(
            encryptedKeyMaterial, wrappingKey: token.wrappingKey, algorithm: token.algorithm, for: key.id, version: 1, kind: kind,
            previous: previous)
        // Stored only if the key is still PendingImport when written (not scheduled for deletion meanwhile).
        let backingKey = BackingKeyRecord(
            keyID: key.id, version: 1, wrappedKey: material.wrappedKey, binding: material.binding,
            wrappingKeyLabel: material.wrappingKeyLabel, creationDate: clock.now())
        if try await store.storeImportedMaterial(backingKey, expirationModel: model, validTo: validTo, if: .state(in: [.pendingImport])) == nil {
            await provider.forget(key.id)
            try check(try await currentKey(key))
            throw KMSError(.invalidState, "\(arn(key)) changed while the request ran; try again.")
        }
        logger.info("imported key material", metadata: ["kms.key.id": "\(key.id)", "kms.import.expiration": "\(model.rawValue)"])
        return arn(key)
    }

    public func deleteImportedKeyMaterial(keyID: String, caller: Caller) async throws {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:DeleteImportedKeyMaterial", resolved, caller: caller)
        let key = resolved.record
        try requireExternal(key)
        try await removeImportedMaterial(of: key)
    }

    /// Deletes imported material whose ValidTo has passed; the keys return to PendingImport. Returns their ids.
    @discardableResult
    public func expireImportedKeyMaterial() async throws -> [KeyID] {
        let now = clock.now()
        let due = try await store.keysWithExpiringMaterial(dueBy: now)
        var expired: [KeyID] = []
        for key in due {
            // Only if it still expires by now: material imported again meanwhile with a later ValidTo stays.
            guard try await removeImportedMaterial(of: key, if: KeyCondition(materialExpiringBy: now)) else { continue }
            expired.append(key.id)
            logger.info("imported key material expired", metadata: ["kms.key.id": "\(key.id)"])
        }
        return expired
    }

    // MARK: Shared steps

    /// A key pending deletion stays so, as in AWS; CancelKeyDeletion then returns it to PendingImport. Returns
    /// whether the material was removed (the key still existed and satisfied `condition`).
    @discardableResult
    private func removeImportedMaterial(of key: KeyRecord, if condition: KeyCondition = .any) async throws -> Bool {
        guard try await store.deleteImportedMaterial(of: key.id, if: condition) != nil else { return false }
        await provider.forget(key.id)
        return true
    }

    private func requireExternal(_ key: KeyRecord) throws(KMSError) {
        guard key.origin == .external else {
            throw KMSError(.unsupportedOperation, "\(arn(key)) origin is \(key.origin.rawValue) which is not valid for this operation.")
        }
    }

    private func importConditions(_ algorithm: WrappingAlgorithm, _ spec: KeyPairSpec) -> ConditionContext {
        var conditions = ConditionContext()
        conditions.set("kms:WrappingAlgorithm", algorithm.rawValue)
        conditions.set("kms:WrappingKeySpec", spec.rawValue)
        return conditions
    }

    /// Opens a token GetParametersForImport made for this key; another key's token, or anything altered, is
    /// `InvalidImportTokenException`, an old one `ExpiredImportTokenException`.
    private func openImportToken(_ bytes: [UInt8], for key: KeyRecord) async throws -> ImportToken {
        let invalid = KMSError(.invalidImportToken, "The import token is invalid or belongs to another KMS key.")
        guard bytes.count > SealedData.ivLength else { throw invalid }
        let sealed = SealedData(iv: Array(bytes.prefix(SealedData.ivLength)), ciphertextAndTag: Array(bytes.dropFirst(SealedData.ivLength)))
        let token: ImportToken
        do {
            token = try ImportToken(decoding: try await provider.unseal(sealed, additionalData: ImportToken.additionalData(for: key.id)))
        } catch let error as KMSError where error.code == .invalidCiphertext {
            throw invalid
        }
        guard token.keyID == key.id else { throw invalid }
        guard token.validTo > clock.now() else {
            throw KMSError(.expiredImportToken, "The import token expired at \(token.validTo); call GetParametersForImport again.")
        }
        return token
    }
}

/// What an import token carries, sealed under the token's sealing key and bound to one KMS key: the
/// wrapping key (its private key wrapped under the domain key), the algorithm and the expiry. Trent stores
/// nothing for it, so a token is usable exactly until it expires.
struct ImportToken {
    var keyID: KeyID
    var algorithm: WrappingAlgorithm
    var wrappingKey: ImportWrappingKey
    var validTo: Date

    static func additionalData(for keyID: KeyID) -> [UInt8] { Array("trent.import-token.v1".utf8) + keyID.bytes }

    /// The sealed form: binary members as base64, so an RSA-4096 wrapping key fits AWS's 6144-byte token limit.
    private struct Encoded: Codable {
        var keyID: UUID
        var algorithm: WrappingAlgorithm
        var spec: KeyPairSpec
        var wrappedPrivateKey: Data
        var publicKey: Data
        var validTo: Date
    }

    func encoded() throws -> [UInt8] {
        Array(
            try JSONEncoder().encode(
                Encoded(
                    keyID: keyID.uuid, algorithm: algorithm, spec: wrappingKey.spec, wrappedPrivateKey: Data(wrappingKey.wrappedPrivateKey),
                    publicKey: Data(wrappingKey.publicKey), validTo: validTo)))
    }

    init(keyID: KeyID, algorithm: WrappingAlgorithm, wrappingKey: ImportWrappingKey, validTo: Date) {
        self.keyID = keyID
        self.algorithm = algorithm
        self.wrappingKey = wrappingKey
        self.validTo = validTo
    }

    init(decoding bytes: [UInt8]) throws {
        let encoded = try JSONDecoder().decode(Encoded.self, from: Data(bytes))
        self.init(
            keyID: KeyID(encoded.keyID), algorithm: encoded.algorithm,
            wrappingKey: ImportWrappingKey(spec: encoded.spec, wrappedPrivateKey: Array(encoded.wrappedPrivateKey), publicKey: Array(encoded.publicKey)),
            validTo: encoded.validTo)
    }
}

extension ConditionContext {
    static func expirationModel(_ model: ExpirationModel, validTo: Date?) -> ConditionContext {
        var context = ConditionContext()
        context.set("kms:ExpirationModel", model.rawValue)
        if let validTo { context.set("kms:ValidTo", String(Int(validTo.timeIntervalSince1970))) }
        return context
    }
}

extension KMSError.Code {
    public static let invalidImportToken = KMSError.Code(rawValue: "InvalidImportTokenException")
    public static let expiredImportToken = KMSError.Code(rawValue: "ExpiredImportTokenException")
}
