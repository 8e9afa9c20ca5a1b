import Foundation
import KMS

struct EnableKeyRotationInput: Decodable, Sendable {
    var KeyId: String?
    var RotationPeriodInDays: Int?
}

struct GetKeyRotationStatusOutput: Encodable, Sendable {
    var KeyRotationEnabled: Bool
    var KeyId: String
    var RotationPeriodInDays: Int?
    var NextRotationDate: Date?
}

struct RotateKeyOnDemandOutput: Encodable, Sendable { var KeyId: String }

struct ListKeyRotationsInput: Decodable, Sendable {
    var KeyId: String?
    var IncludeKeyMaterial: String?
    var Limit: Int?
    var Marker: String?
}

struct ListKeyRotationsOutput: Encodable, Sendable {
    struct Entry: Encodable, Sendable {
        var KeyId: String
        var KeyMaterialId: String
        var KeyMaterialDescription: String?
        var ImportState: String?
        var KeyMaterialState: String
        var ExpirationModel: String?
        var ValidTo: Date?
        var RotationDate: Date?
        var RotationType: String?

        init(_ rotation: KeyManagementService.Rotation) {
            KeyId = rotation.keyARN
            KeyMaterialId = rotation.materialID
            KeyMaterialDescription = rotation.imported?.description
            ImportState = rotation.imported?.importState.rawValue
            KeyMaterialState = rotation.state.rawValue
            ExpirationModel = rotation.imported?.expirationModel?.rawValue
            ValidTo = rotation.imported?.validTo
            RotationDate = rotation.date
            RotationType = rotation.type?.rawValue
        }
    }
    var Rotations: [Entry]
    var NextMarker: String?
    var Truncated: Bool
}

extension KeyManagementService {
    func rotationOperations() -> [String: Operation] {
        return [
            "EnableKeyRotation": .json(EnableKeyRotationInput.self) { request, caller in
                try await self.enableKeyRotation(try required(request.KeyId, "KeyId"), periodInDays: request.RotationPeriodInDays, caller: caller)
                return NoOutput()
            },
            "DisableKeyRotation": .json(KeyIDRequest.self) { request, caller in
                try await self.disableKeyRotation(try required(request.KeyId, "KeyId"), caller: caller)
                return NoOutput()
            },
            "GetKeyRotationStatus": .json(KeyIDRequest.self) { request, caller in
                let status = try await self.getKeyRotationStatus(try required(request.KeyId, "KeyId"), caller: caller)
                return GetKeyRotationStatusOutput(
                    KeyRotationEnabled: status.schedule != nil, KeyId: status.keyARN, RotationPeriodInDays: status.schedule?.periodInDays,
                    NextRotationDate: status.schedule?.nextRotationDate)
            },
            "RotateKeyOnDemand": .json(KeyIDRequest.self) { request, caller in
                let key = try await self.rotateKeyOnDemand(try required(request.KeyId, "KeyId"), caller: caller)
                return RotateKeyOnDemandOutput(KeyId: key.arn)
            },
            "ListKeyRotations": .json(ListKeyRotationsInput.self) { request, caller in
                let page = try await self.listKeyRotations(
                    try required(request.KeyId, "KeyId"), includeKeyMaterial: request.IncludeKeyMaterial, limit: request.Limit,
                    marker: request.Marker, caller: caller)
                return ListKeyRotationsOutput(Rotations: page.items.map(ListKeyRotationsOutput.Entry.init), NextMarker: page.nextMarker, Truncated: page.nextMarker != nil)
            },
        ]
    }
}

struct GetKeyLastUsageOutput: Encodable, Sendable {
    struct Usage: Encodable, Sendable {
        var Operation: String
        var Timestamp: Date
        var CloudTrailEventId: String?
        var KmsRequestId: String?
    }
    var KeyId: String
    var KeyLastUsage: Usage?
    var TrackingStartDate: Date
    var KeyCreationDate: Date
}

extension KeyManagementService {
    func usageOperations() -> [String: Operation] {
        [
            "GetKeyLastUsage": .json(KeyIDRequest.self) { request, caller in
                let report = try await self.getKeyLastUsage(try required(request.KeyId, "KeyId"), caller: caller)
                return GetKeyLastUsageOutput(
                    KeyId: report.keyID.description,
                    KeyLastUsage: report.lastUsage.map {
                        .init(Operation: $0.operation, Timestamp: $0.timestamp, CloudTrailEventId: $0.eventID, KmsRequestId: $0.requestID)
                    },
                    TrackingStartDate: report.trackingStartDate, KeyCreationDate: report.keyCreationDate)
            }
        ]
    }
}
