import Foundation
import KMS

struct GetParametersForImportRequest: Decodable, Sendable {
    var KeyId: String?
    var WrappingAlgorithm: String?
    var WrappingKeySpec: String?
}

struct GetParametersForImportResponse: Encodable, Sendable {
    var KeyId: String
    var ImportToken: Blob
    var PublicKey: Blob
    var ParametersValidTo: Date
}

struct ImportKeyMaterialRequest: Decodable, Sendable {
    var KeyId: String?
    var ImportToken: Blob?
    var EncryptedKeyMaterial: Blob?
    /// Seconds since 1970, as AWS JSON carries timestamps.
    var ValidTo: Double?
    var ExpirationModel: String?
    var ImportType: String?
    var KeyMaterialDescription: String?
    var KeyMaterialId: String?
}

struct ImportKeyMaterialResponse: Encodable, Sendable {
    var KeyId: String
    var KeyMaterialId: String
}

struct DeleteImportedKeyMaterialRequest: Decodable, Sendable {
    var KeyId: String?
    var KeyMaterialId: String?
}

struct DeleteImportedKeyMaterialResponse: Encodable, Sendable {
    var KeyId: String
    var KeyMaterialId: String?
}

extension KeyManagementService {
    func importOperations() -> [String: Operation] {
        [
            "GetParametersForImport": .json(GetParametersForImportRequest.self) { request, caller in
                let result = try await self.getParametersForImport(
                    keyID: try required(request.KeyId, "KeyId"),
                    wrappingAlgorithm: try required(request.WrappingAlgorithm, "WrappingAlgorithm"),
                    wrappingKeySpec: try required(request.WrappingKeySpec, "WrappingKeySpec"), caller: caller)
                return GetParametersForImportResponse(
                    KeyId: result.keyARN, ImportToken: Blob(result.importToken), PublicKey: Blob(result.publicKey),
                    ParametersValidTo: result.parametersValidTo)
            },
            "ImportKeyMaterial": .json(ImportKeyMaterialRequest.self) { request, caller in
                let result = try await self.importKeyMaterial(
                    keyID: try required(request.KeyId, "KeyId"), importToken: try required(request.ImportToken, "ImportToken").bytes,
                    encryptedKeyMaterial: try required(request.EncryptedKeyMaterial, "EncryptedKeyMaterial").bytes,
                    validTo: request.ValidTo.map(Date.init(timeIntervalSince1970:)), expirationModel: request.ExpirationModel,
                    importType: request.ImportType, materialDescription: request.KeyMaterialDescription, materialID: request.KeyMaterialId,
                    caller: caller)
                return ImportKeyMaterialResponse(KeyId: result.keyARN, KeyMaterialId: result.materialID)
            },
            "DeleteImportedKeyMaterial": .json(DeleteImportedKeyMaterialRequest.self) { request, caller in
                let deleted = try await self.deleteImportedKeyMaterial(
                    keyID: try required(request.KeyId, "KeyId"), materialID: request.KeyMaterialId, caller: caller)
                return DeleteImportedKeyMaterialResponse(KeyId: deleted.keyARN, KeyMaterialId: deleted.materialID)
            },
        ]
    }
}
