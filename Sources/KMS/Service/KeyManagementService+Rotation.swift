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

    public struct Rotation: Sendable {
        public var keyARN: String
        public var version: UInt32
        public var date: Date
        public var type: RotationType
    }

    public func enableKeyRotation(_ keyID: String, periodInDays: Int?, caller: Caller) async throws {
        let days = periodInDays ?? Self.defaultRotationPeriodInDays
        try validateRange(days, "rotationPeriodInDays", min: 90, max: 2560)
        let key = try await rotatableKey(keyID, action: "kms:EnableKeyRotation", caller: caller)
        let schedule = RotationSchedule(periodInDays: days, nextRotationDate: clock.now().addingTimeInterval(Double(days) * 86_400))
        _ = try await update(key, .rotationSchedule(schedule), if: .state(in: [.enabled]), check: requireEnabled)
    }

    public func disableKeyRotation(_ keyID: String, caller: Caller) async throws {
        let key = try await rotatableKey(keyID, action: "kms:DisableKeyRotation", caller: caller)
        _ = try await update(key, .rotationSchedule(nil), if: .state(in: [.enabled]), check: requireEnabled)
    }

    public func getKeyRotationStatus(_ keyID: String, caller: Caller) async throws -> RotationStatus {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:GetKeyRotationStatus", resolved, caller: caller)
        try requireRotatableKind(resolved.record)
        let schedule = try await primaryKey(of: resolved.record)?.rotationSchedule
        return RotationStatus(keyARN: arn(resolved.record), schedule: schedule)
    }

    /// Rotates now, whatever the schedule (which it leaves as it is), at most 25 times per key as in AWS.
    public func rotateKeyOnDemand(_ keyID: String, caller: Caller) async throws -> KeyRecord {
        let key = try await rotatableKey(keyID, action: "kms:RotateKeyOnDemand", caller: caller)
        let onDemand = try await store.backingKeys(of: key.materialOwner).filter { $0.rotationType == .onDemand }.count
        guard onDemand < Self.maximumOnDemandRotations else {
            throw KMSError(.limitExceeded, "\(arn(key)) has been rotated on demand \(onDemand) times, the most allowed.")
        }
        let version = try await ledger.rotate(key.materialOwner, type: .onDemand)
        logger.info("rotated key on demand", metadata: ["kms.key.id": "\(key.id)", "kms.backing_key.version": "\(version.version)"])
        return key
    }

    public func listKeyRotations(_ keyID: String, limit: Int?, marker: String?, caller: Caller) async throws -> Page<Rotation> {
        let limit = limit ?? 100
        try validateRange(limit, "limit", min: 1, max: 1000)
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:ListKeyRotations", resolved, caller: caller)
        try requireRotatableKind(resolved.record)
        let keyARN = arn(resolved.record)
        let rotations = try await store.backingKeys(of: resolved.record.materialOwner).compactMap { version in
            version.rotationType.map { Rotation(keyARN: keyARN, version: version.version, date: version.creationDate, type: $0) }
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
    private func rotatableKey(_ keyID: String, action: String, caller: Caller) async throws -> KeyRecord {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize(action, resolved, caller: caller)
        let key = resolved.record
        try requireRotatableKind(key)
        guard key.multiRegionKeyType != .replica else {
            throw KMSError(.unsupportedOperation, "\(arn(key)) is a multi-Region replica key: its rotation is its primary key's.")
        }
        try requireEnabled(key)
        return key
    }

    /// Only symmetric encryption keys with material Trent generated rotate, as in AWS.
    private func requireRotatableKind(_ key: KeyRecord) throws(KMSError) {
        guard key.keySpec == .symmetricDefault, key.keyUsage == .encryptDecrypt else {
            throw KMSError(.unsupportedOperation, "\(arn(key)) is not a symmetric encryption key: its key material does not rotate.")
        }
        guard key.origin == .awsKMS else {
            throw KMSError(.unsupportedOperation, "\(arn(key)) has \(key.origin.rawValue) key material, which Trent does not rotate.")
        }
    }
}
