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
        var key = try await rotatableKey(keyID, action: "kms:EnableKeyRotation", caller: caller)
        key.rotationSchedule = RotationSchedule(periodInDays: days, nextRotationDate: clock.now().addingTimeInterval(Double(days) * 86_400))
        try await store.updateKey(key)
    }

    public func disableKeyRotation(_ keyID: String, caller: Caller) async throws {
        var key = try await rotatableKey(keyID, action: "kms:DisableKeyRotation", caller: caller)
        key.rotationSchedule = nil
        try await store.updateKey(key)
    }

    public func getKeyRotationStatus(_ keyID: String, caller: Caller) async throws -> RotationStatus {
        let resolved = try await resolveKey(keyID, allowAlias: false, caller: caller)
        try await authorize("kms:GetKeyRotationStatus", resolved, caller: caller)
        try requireRotatableKind(resolved.record)
        return RotationStatus(keyARN: arn(resolved.record), schedule: resolved.record.rotationSchedule)
    }

    /// Rotates now, whatever the schedule (which it leaves as it is), at most 25 times per key as in AWS.
    public func rotateKeyOnDemand(_ keyID: String, caller: Caller) async throws -> KeyRecord {
        let key = try await rotatableKey(keyID, action: "kms:RotateKeyOnDemand", caller: caller)
        let onDemand = try await store.backingKeys(of: key.id).filter { $0.rotationType == .onDemand }.count
        guard onDemand < Self.maximumOnDemandRotations else {
            throw KMSError(.limitExceeded, "\(arn(key)) has been rotated on demand \(onDemand) times, the most allowed.")
        }
        let version = try await ledger.rotate(key.id, type: .onDemand)
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
        let rotations = try await store.backingKeys(of: resolved.record.id).compactMap { version in
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

    /// Rotates every enabled key whose rotation date has come, and schedules its next rotation. Disabled keys
    /// wait: they rotate once they are enabled again. Returns the rotated ids.
    @discardableResult
    public func rotateDueKeys() async throws -> [KeyID] {
        let now = clock.now()
        var rotated: [KeyID] = []
        for due in try await store.keysDueForRotation(dueBy: now) where due.state == .enabled {
            guard var schedule = due.rotationSchedule else { continue }
            _ = try await ledger.rotate(due.id, type: .automatic)
            let period = Double(schedule.periodInDays) * 86_400
            schedule.nextRotationDate = max(schedule.nextRotationDate.addingTimeInterval(period), now.addingTimeInterval(period / 2))
            // Re-read after the rotation, so only the schedule changes (not a state or description changed meanwhile).
            guard var key = try await store.key(due.id) else { continue }
            key.rotationSchedule = schedule
            try await store.updateKey(key)
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
