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
        if key.keySpec.keyPairSpec != nil, !algorithm.wrapsWithAES {
            throw KMSError(
                .unsupportedOperation,
                "Trent imports \(key.keySpec.rawValue) key material only with RSA_AES_KEY_WRAP_SHA_1 or RSA_AES_KEY_WRAP_SHA_256, so that the token unwraps the private key itself.")
        }
        let wrappingKey = try await provider.createImportWrappingKey(spec)
        let validTo = clock.now().addingTimeInterval(Self.importTokenLifetime)
        let token = ImportToken(keyID: key.id, algorithm: algorithm, wrappingKey: wrappingKey, validTo: validTo)
        let sealed = try await provider.seal(try token.encoded(), additionalData: ImportToken.additionalData(for: key.id))
        return ImportParameters(
            keyARN: arn(key), importToken: sealed.iv + sealed.ciphertextAndTag, publicKey: wrappingKey.publicKey, parametersValidTo: validTo)
    }

    public struct ImportResult: Sendable {
        public var keyARN: String
        /// The id of the material imported: the version's it restores, or the new version's.
        public var materialID: String
    }

    /// Imports material into a key of origin EXTERNAL. Material the key has had before (EXISTING_KEY_MATERIAL, the
    /// default once the key has had material) restores its version, or gives it a new expiry, in a key that is
    /// PendingImport or Enabled; the key is Enabled once every version it uses has its material. New material
    /// (NEW_KEY_MATERIAL, the default for the first import) is the key's first, or, for a symmetric encryption key
    /// that has material, is staged as the next version (PENDING_ROTATION) until RotateKeyOnDemand makes it current.
    @discardableResult
    public func importKeyMaterial(
        keyID: String, importToken: [UInt8], encryptedKeyMaterial: [UInt8], validTo: Date?, expirationModel: String?,
        importType: String? = nil, materialDescription: String? = nil, materialID: String? = nil, caller: Caller
    ) async throws -> ImportResult {
        try validateLength(importToken.count, "importToken", min: 1, max: 6144)
        try validateLength(encryptedKeyMaterial.count, "encryptedKeyMaterial", min: 1, max: 6144)
        let model = try expirationModel.map { text throws(KMSError) in try validateEnum(text, "expirationModel", as: ExpirationModel.self) } ?? .expires
        let requestedType = try importType.map { text throws(KMSError) in try validateEnum(text, "importType", as: ImportType.self) }
        if let materialDescription { try validateKeyMaterialDescription(materialDescription) }
        if let materialID { try validateKeyMaterialID(materialID, "keyMaterialId") }
        if requestedType == .newKeyMaterial, materialID != nil {
            throw KMSError(.validation, "KeyMaterialId cannot be specified when ImportType is NEW_KEY_MATERIAL.")
        }
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
        try requireNotPendingDeletion(key)
        guard let kind = key.keySpec.backingKeyKind else {
            throw KMSError(.unsupportedOperation, "KeySpec \(key.keySpec.rawValue) takes no imported material in Trent.")
        }
        let symmetric = key.keySpec == .symmetricDefault
        if !symmetric, requestedType != nil || materialDescription != nil || materialID != nil {
            throw KMSError(
                .validation, "ImportType, KeyMaterialDescription and KeyMaterialId are only usable with symmetric encryption keys.")
        }
        let versions = try await store.backingKeys(of: key.id)
        let type = requestedType ?? (versions.isEmpty ? .newKeyMaterial : .existingKeyMaterial)
        let target = try importTarget(of: key, type: type, versions: versions, materialID: materialID)
        let token = try await openImportToken(importToken, for: key)
        let material = try await provider.importKeyMaterial(
            encryptedKeyMaterial, wrappingKey: token.wrappingKey, algorithm: token.algorithm, for: key.id, version: target.version, kind: kind,
            previous: target.previous)
        // Stored only if the key is still in the state the target was chosen for (not scheduled for deletion meanwhile).
        let backingKey = BackingKeyRecord(
            keyID: key.id, version: target.version, wrappedKey: material.wrappedKey, binding: material.binding,
            wrappingKeyLabel: material.wrappingKeyLabel, creationDate: target.previous?.creationDate ?? clock.now(),
            publicKey: material.publicKey, materialID: target.previous?.materialID ?? KeyMaterialID.make(),
            materialDescription: materialDescription)
        let condition = KeyCondition(states: target.states, currentVersionBelow: target.staged ? target.version : nil)
        if try await store.storeImportedMaterial(backingKey, expirationModel: model, validTo: validTo, if: condition) == nil {
            await provider.forget(key.id)
            let now = try await currentKey(key)
            try requireNotPendingDeletion(now)
            try requireState(now, target.states)
            throw KMSError(.invalidState, "\(arn(key)) changed while the request ran; try again.")
        }
        logger.info(
            "imported key material",
            metadata: [
                "kms.key.id": "\(key.id)", "kms.import.expiration": "\(model.rawValue)", "kms.key_material.id": "\(backingKey.materialID)",
            ])
        return ImportResult(keyARN: arn(key), materialID: backingKey.materialID)
    }

    /// The version an import writes, the material it must equal (re-imports), and the key state it needs.
    private struct ImportTarget {
        var version: UInt32
        var previous: BackingKeyRecord?
        var states: Set<KeyState>
        /// New material staged after the key's current version.
        var staged: Bool
    }

    private func importTarget(of key: KeyRecord, type: ImportType, versions: [BackingKeyRecord], materialID: String?) throws(KMSError) -> ImportTarget {
        switch type {
        case .newKeyMaterial:
            guard let last = versions.last else {
                try requireState(key, [.pendingImport])
                return ImportTarget(version: key.currentVersion, previous: nil, states: [.pendingImport], staged: false)
            }
            guard key.keySpec == .symmetricDefault else {
                throw KMSError(
                    .unsupportedOperation, "\(arn(key)) is not a symmetric encryption key: new key material cannot be imported after the first.")
            }
            guard last.version <= key.currentVersion else {
                throw KMSError(
                    .invalidState, "\(arn(key)) already has key material \(last.materialID) pending rotation; rotate or delete it first.")
            }
            try requireState(key, [.enabled])
            let (next, overflow) = key.currentVersion.addingReportingOverflow(1)
            guard !overflow else { throw KMSError(.limitExceeded, "\(arn(key)) has no key material version left.") }
            return ImportTarget(version: next, previous: nil, states: [.enabled], staged: true)
        case .existingKeyMaterial:
            let previous: BackingKeyRecord
            if let materialID {
                guard let named = versions.first(where: { $0.materialID == materialID }) else {
                    throw KMSError(.notFound, "Key material \(materialID) is not associated with \(arn(key)).")
                }
                previous = named
            } else {
                // The material that is missing (the current version's first); else the current version's.
                let missing = versions.filter { $0.wrappedKey.isEmpty && $0.version <= key.currentVersion }
                guard let chosen = missing.first(where: { $0.version == key.currentVersion }) ?? missing.first
                    ?? versions.first(where: { $0.version == key.currentVersion })
                else {
                    throw KMSError(.validation, "\(arn(key)) has no key material yet; import it with ImportType NEW_KEY_MATERIAL.")
                }
                previous = chosen
            }
            if previous.version > key.currentVersion {
                // Staged material may be imported again (to change its expiry) while it is still staged.
                try requireState(key, [.enabled])
                return ImportTarget(version: previous.version, previous: previous, states: [.enabled], staged: true)
            }
            try requireState(key, [.pendingImport, .enabled])
            return ImportTarget(version: previous.version, previous: previous, states: [.pendingImport, .enabled], staged: false)
        }
    }

    private func requireState(_ key: KeyRecord, _ states: Set<KeyState>) throws(KMSError) {
        guard states.contains(key.state) else {
            let allowed = states.map(\.rawValue).sorted(by: >).joined(separator: " or ")
            throw KMSError(
                .invalidState, "\(arn(key)) is \(key.state.rawValue); this key material can be imported only into a key that is \(allowed).")
        }
    }

    /// The model's KeyMaterialDescriptionType: up to 256 characters of letters, digits, whitespace and `:/_.-`.
    private func validateKeyMaterialDescription(_ text: String) throws(KMSError) {
        let allowed = text.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (CharacterSet.alphanumerics.contains(scalar) || CharacterSet.whitespacesAndNewlines.contains(scalar) || ":/_.-".unicodeScalars.contains(scalar))
        }
        guard text.count <= 256 else {
            throw KMSError.constraint("keyMaterialDescription", "Member must have length less than or equal to 256", value: text)
        }
        guard !text.isEmpty, allowed else {
            throw KMSError.constraint("keyMaterialDescription", "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_\\s.-]+$", value: text)
        }
    }

    /// The model's BackingKeyIdType: 64 lowercase hex digits.
    func validateKeyMaterialID(_ text: String, _ member: String) throws(KMSError) {
        guard text.utf8.count == 64 else {
            throw KMSError.constraint(member, "Member must have length less than or equal to 64, Member must have length greater than or equal to 64", value: text)
        }
        guard KeyMaterialID.isWellFormed(text) else {
            throw KMSError.constraint(member, "Member must satisfy regular expression pattern: ^[a-f0-9]+$", value: text)
        }
    }

    public struct DeletedMaterial: Sendable {
        public var keyARN: String
        /// Nil when the key had no material to delete.
        public var materialID: String?
    }

    /// Deletes the named version's imported material, or the current version's: see
    /// ``MetadataStore/deleteImportedMaterial(of:version:if:)`` for what becomes of the key.
    public func deleteImportedKeyMaterial(keyID: String, materialID: String? = nil, caller: Caller) async throws -> DeletedMaterial {
        if let materialID { try validateKeyMaterialID(materialID, "keyMaterialId") }
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:DeleteImportedKeyMaterial", resolved, caller: caller)
        let key = resolved.record
        try requireExternal(key)
        let versions = try await store.backingKeys(of: key.id)
        let version: BackingKeyRecord?
        if let materialID {
            guard let named = versions.first(where: { $0.materialID == materialID }) else {
                throw KMSError(.notFound, "Key material \(materialID) is not associated with \(arn(key)).")
            }
            version = named
        } else {
            version = versions.first { $0.version == key.currentVersion }
        }
        guard let version else { return DeletedMaterial(keyARN: arn(key), materialID: nil) }
        try await removeImportedMaterial(of: key, version: version.version)
        return DeletedMaterial(keyARN: arn(key), materialID: version.materialID)
    }

    /// Deletes imported material, of any version, whose ValidTo has passed: a key whose version in use lost its
    /// material returns to PendingImport, a staged version goes (see the store). Returns the keys' ids.
    @discardableResult
    public func expireImportedKeyMaterial() async throws -> [KeyID] {
        let now = clock.now()
        let due = try await store.keysWithExpiringMaterial(dueBy: now)
        var expired: [KeyID] = []
        for key in due {
            for version in try await store.backingKeys(of: key.id) where !version.wrappedKey.isEmpty {
                guard let validTo = version.validTo, validTo <= now else { continue }
                // Only if it still expires by now: material imported again meanwhile with a later ValidTo stays.
                guard try await removeImportedMaterial(of: key, version: version.version, if: KeyCondition(materialExpiringBy: now)) else { continue }
                if expired.last != key.id { expired.append(key.id) }
                logger.info("imported key material expired", metadata: ["kms.key.id": "\(key.id)", "kms.key_material.id": "\(version.materialID)"])
            }
        }
        return expired
    }

    // MARK: Shared steps

    /// A key pending deletion stays so, as in AWS; CancelKeyDeletion then returns it to PendingImport. Returns
    /// whether the material was removed (the key still existed and satisfied `condition`).
    @discardableResult
    private func removeImportedMaterial(of key: KeyRecord, version: UInt32, if condition: KeyCondition = .any) async throws -> Bool {
        guard try await store.deleteImportedMaterial(of: key.id, version: version, if: condition) != nil else { return false }
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
