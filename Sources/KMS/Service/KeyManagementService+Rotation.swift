public import Foundation
import Logging

/// Rotation of key material: automatic on a schedule, and on demand. A rotation makes a new backing-key
/// version for new encryptions; every ciphertext names its version, so all earlier ones still decrypt.
extension KeyManagementService {
    public static let defaultRotationPeriodInDays = 365
    public static let maximumOnDemandRotations = 25

    public struct RotationStatus: Sendable {
        public var keyARN: String
        public var schedule: RotationSchedule?
    }

    /// One key material of a key, as ListKeyRotations shows it.
    public struct Rotation: Sendable {
        public var keyARN: String
        public var version: UInt32
        public var materialID: String
        public var state: KeyMaterialState
        /// When a rotation made it current; nil for the first material and for material pending rotation.
        public var date: Date?
        public var type: RotationType?
        /// Imported material only (keys of origin EXTERNAL).
        public var imported: ImportedMaterialView?
    }

    public struct ImportedMaterialView: Sendable {
        public var importState: ImportState
        public var expirationModel: ExpirationModel?
        public var validTo: Date?
        public var description: String?
    }

    public enum KeyMaterialState: String, Sendable {
        case current = "CURRENT"
        case nonCurrent = "NON_CURRENT"
        case pendingRotation = "PENDING_ROTATION"
    }

    public enum ImportState: String, Sendable {
        case imported = "IMPORTED"
        case pendingImport = "PENDING_IMPORT"
    }

    /// Which key materials ListKeyRotations lists, spelled as the API spells it.
    public enum IncludeKeyMaterial: String, Sendable, CaseIterable {
        case allKeyMaterial = "ALL_KEY_MATERIAL"
        case rotationsOnly = "ROTATIONS_ONLY"
    }

    public func enableKeyRotation(_ keyID: String, periodInDays: Int?, caller: Caller) async throws {
        let days = periodInDays ?? Self.defaultRotationPeriodInDays
        try validateRange(days, "rotationPeriodInDays", min: 90, max: 2560)
        let key = try await rotatableKey(keyID, action: "kms:EnableKeyRotation", automatic: true, caller: caller)
        let schedule = RotationSchedule(periodInDays: days, nextRotationDate: clock.now().addingTimeInterval(Double(days) * 86_400))
        _ = try await update(key, .rotationSchedule(schedule), if: .state(in: [.enabled]), check: requireEnabled)
    }

    public func disableKeyRotation(_ keyID: String, caller: Caller) async throws {
        let key = try await rotatableKey(keyID, action: "kms:DisableKeyRotation", automatic: true, caller: caller)
        _ = try await update(key, .rotationSchedule(nil), if: .state(in: [.enabled]), check: requireEnabled)
    }

    public func getKeyRotationStatus(_ keyID: String, caller: Caller) async throws -> RotationStatus {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:GetKeyRotationStatus", resolved, caller: caller)
        try requireRotatableKind(resolved.record, automatic: true)
        let schedule = try await primaryKey(of: resolved.record)?.rotationSchedule
        return RotationStatus(keyARN: arn(resolved.record), schedule: schedule)
    }

    /// Rotates now, whatever the schedule (which it leaves as it is), at most 25 times per key as in AWS. A key of
    /// imported material rotates to the new material staged for it (ImportKeyMaterial with NEW_KEY_MATERIAL).
    public func rotateKeyOnDemand(_ keyID: String, caller: Caller) async throws -> KeyRecord {
        let key = try await rotatableKey(keyID, action: "kms:RotateKeyOnDemand", automatic: false, caller: caller)
        let versions = try await store.backingKeys(of: key.materialOwner)
        let onDemand = versions.filter { $0.rotationType == .onDemand }.count
        guard onDemand < Self.maximumOnDemandRotations else {
            throw KMSError(
                .limitExceeded,
                "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: \(arn(key))")
        }
        if key.origin == .external {
            guard let staged = versions.last, staged.version > key.currentVersion else {
                throw KMSError(
                    .unsupportedOperation,
                    "\(arn(key)) has no imported key material pending rotation; import new key material (ImportType NEW_KEY_MATERIAL) first.")
            }
            guard try await store.makeStagedMaterialCurrent(key.id, version: staged.version, on: clock.now(), if: .state(in: [.enabled])) != nil else {
                try requireEnabled(try await currentKey(key))
                throw KMSError(.invalidState, "\(arn(key)) changed while the request ran; try again.")
            }
            logger.info("rotated key on demand", metadata: ["kms.key.id": "\(key.id)", "kms.backing_key.version": "\(staged.version)"])
            return key
        }
        let version = try await ledger.rotate(key.materialOwner, type: .onDemand)
        logger.info("rotated key on demand", metadata: ["kms.key.id": "\(key.id)", "kms.backing_key.version": "\(version.version)"])
        return key
    }

    /// The key's materials: by default those rotations made; with ALL_KEY_MATERIAL also the first and any staged.
    public func listKeyRotations(
        _ keyID: String, includeKeyMaterial: String? = nil, limit: Int?, marker: String?, caller: Caller
    ) async throws -> Page<Rotation> {
        let include = try includeKeyMaterial.map { text throws(KMSError) in
            try validateEnum(text, "includeKeyMaterial", as: IncludeKeyMaterial.self)
        } ?? .rotationsOnly
        let limit = limit ?? 100
        try validateRange(limit, "limit", min: 1, max: 1000)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:ListKeyRotations", resolved, caller: caller)
        let key = resolved.record
        try requireRotatableKind(key, automatic: false)
        let keyARN = arn(key)
        let rotations = try await store.backingKeys(of: key.materialOwner).compactMap { version -> Rotation? in
            let staged = version.version > key.currentVersion
            guard include == .allKeyMaterial || (version.rotationType != nil && !staged) else { return nil }
            let state: KeyMaterialState = staged ? .pendingRotation : version.version == key.currentVersion ? .current : .nonCurrent
            let imported = key.origin == .external
                ? ImportedMaterialView(
                    importState: version.wrappedKey.isEmpty ? .pendingImport : .imported, expirationModel: version.expirationModel,
                    validTo: version.validTo, description: version.materialDescription)
                : nil
            let rotated = staged ? nil : version.rotationType
            return Rotation(
                keyARN: keyARN, version: version.version, materialID: version.materialID, state: state,
                date: rotated == nil ? nil : version.creationDate, type: rotated, imported: imported)
        }
        var start = 0
        if let marker {
            guard let after = UInt32(marker) else { throw KMSError(.invalidMarker, "The marker '\(marker)' is not valid.") }
            start = rotations.firstIndex { $0.version > after } ?? rotations.count
        }
        let page = Array(rotations[start...].prefix(limit))
        let more = start + page.count < rotations.count
        return Page(items: page, nextMarker: more ? page.last.map { String($0.version) } : nil)
    }

    /// DescribeKey's `CurrentKeyMaterialId`: present, as in AWS, for symmetric encryption keys of origin AWS_KMS or
    /// EXTERNAL that have (or had) material.
    public func currentKeyMaterialID(of key: KeyRecord) async throws -> String? {
        guard key.keySpec == .symmetricDefault, key.origin == .awsKMS || key.origin == .external else { return nil }
        return try await store.backingKey(key.materialOwner, version: key.currentVersion)?.materialID
    }

    /// How long a scheduler holds a due rotation it claimed: should it stop before finishing (a crash), the key is
    /// due again after this, for any scheduler.
    public static let rotationClaimLease: TimeInterval = 600

    /// Rotates every enabled key whose rotation date has come, and schedules its next rotation. Disabled keys
    /// wait: they rotate once they are enabled again. Returns the rotated ids.
    ///
    /// Each rotation is claimed first, by moving the next date a short lease ahead, written only if the key is still
    /// enabled, due and on the same schedule: of several schedulers sharing one store (nodes, processes) only one
    /// rotates a key, and a rotation disabled or rescheduled meanwhile is left alone. With the new version (in the same
    /// transaction) the next date moves on by the period, unless the schedule was changed meanwhile (then the change
    /// stands). A rotation that fails gives its claim back; one interrupted by a crash before its new version was
    /// stored is due again when the lease ends.
    @discardableResult
    public func rotateDueKeys() async throws -> [KeyID] {
        let now = clock.now()
        var rotated: [KeyID] = []
        for due in try await store.keysDueForRotation(dueBy: now) where due.state == .enabled {
            guard let current = due.rotationSchedule else { continue }
            let lease = RotationSchedule(periodInDays: current.periodInDays, nextRotationDate: now.addingTimeInterval(Self.rotationClaimLease))
            let claim = KeyCondition(states: [.enabled], rotationDueBy: now, rotationSchedule: current)
            guard try await store.updateKey(due.id, .rotationSchedule(lease), if: claim) != nil else { continue }
            let period = Double(current.periodInDays) * 86_400
            let next = RotationSchedule(
                periodInDays: current.periodInDays,
                nextRotationDate: max(current.nextRotationDate.addingTimeInterval(period), now.addingTimeInterval(period / 2)))
            do {
                // The next date is written with the new version, in one transaction: a crash between the two would
                // leave the lease as the next date, and the key would rotate again when it ends.
                _ = try await ledger.rotate(
                    due.materialOwner, type: .automatic, with: .rotationSchedule(next), if: KeyCondition(rotationSchedule: lease))
            } catch {
                _ = try? await store.updateKey(due.id, .rotationSchedule(current), if: KeyCondition(rotationSchedule: lease))
                throw error
            }
            rotated.append(due.id)
            logger.info("rotated key on schedule", metadata: ["kms.key.id": "\(due.id)"])
        }
        return rotated
    }

    /// Resolves, authorizes and checks a key whose rotation settings are about to change or which is rotating.
    private func rotatableKey(_ keyID: String, action: String, automatic: Bool, caller: Caller) async throws -> KeyRecord {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize(action, resolved, caller: caller)
        let key = resolved.record
        // Imported material is refused first; then AWS tells a disabled key (DisabledException) whatever its spec.
        try requireRotatableOrigin(key, automatic: automatic)
        guard key.multiRegionKeyType != .replica else {
            throw KMSError(.unsupportedOperation, "\(arn(key)) is a multi-Region replica key: its rotation is its primary key's.")
        }
        try requireEnabled(key)
        try requireRotatableSpec(key)
        return key
    }

    /// Only symmetric encryption keys rotate, as in AWS: on a schedule (`automatic`) only with material Trent
    /// generated, on demand also with imported material.
    private func requireRotatableKind(_ key: KeyRecord, automatic: Bool) throws(KMSError) {
        try requireRotatableSpec(key)
        try requireRotatableOrigin(key, automatic: automatic)
    }

    /// AWS refuses the other kinds with an empty message.
    private func requireRotatableSpec(_ key: KeyRecord) throws(KMSError) {
        guard key.keySpec == .symmetricDefault, key.keyUsage == .encryptDecrypt else {
            throw KMSError(.unsupportedOperation, "")
        }
    }

    private func requireRotatableOrigin(_ key: KeyRecord, automatic: Bool) throws(KMSError) {
        guard key.origin == .awsKMS || (key.origin == .external && !automatic) else {
            throw KMSError(.unsupportedOperation, "\(arn(key)) origin is \(key.origin.rawValue) which is not valid for this operation.")
        }
    }
}
