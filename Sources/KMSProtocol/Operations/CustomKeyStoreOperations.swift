import Foundation
import KMS

struct WireXksKeyConfiguration: Encodable, Sendable { var Id: String }

struct CreateCustomKeyStoreInput: Decodable, Sendable {
    var CustomKeyStoreName: String?
    var CloudHsmClusterId: String?
    var TrustAnchorCertificate: String?
    var KeyStorePassword: String?
    var CustomKeyStoreType: String?
    var XksProxyUriEndpoint: String?
    var XksProxyUriPath: String?
    var XksProxyVpcEndpointServiceName: String?
    var XksProxyVpcEndpointServiceOwner: String?
    var XksProxyAuthenticationCredential: WireXksProxyCredential?
    var XksProxyConnectivity: String?

    var hasExternalKeyStoreMembers: Bool {
        XksProxyUriEndpoint != nil || XksProxyUriPath != nil || XksProxyVpcEndpointServiceName != nil
            || XksProxyVpcEndpointServiceOwner != nil || XksProxyAuthenticationCredential != nil || XksProxyConnectivity != nil
    }
}

struct WireXksProxyCredential: Decodable, Sendable {
    var AccessKeyId: String?
    var RawSecretAccessKey: String?
}

struct CreateCustomKeyStoreOutput: Encodable, Sendable { var CustomKeyStoreId: String }

struct DescribeCustomKeyStoresInput: Decodable, Sendable {
    var CustomKeyStoreId: String?
    var CustomKeyStoreName: String?
    var Limit: Int?
    var Marker: String?
}

struct DescribeCustomKeyStoresOutput: Encodable, Sendable {
    struct Entry: Encodable, Sendable {
        var CustomKeyStoreId: String
        var CustomKeyStoreName: String
        var CloudHsmClusterId: String
        var TrustAnchorCertificate: String
        var ConnectionState: String
        var ConnectionErrorCode: String?
        var CreationDate: Date
        var CustomKeyStoreType: String
    }
    var CustomKeyStores: [Entry]
    var NextMarker: String?
    var Truncated: Bool
}

struct UpdateCustomKeyStoreInput: Decodable, Sendable {
    var CustomKeyStoreId: String?
    var NewCustomKeyStoreName: String?
    var KeyStorePassword: String?
    var CloudHsmClusterId: String?
    var XksProxyUriEndpoint: String?
    var XksProxyUriPath: String?
    var XksProxyVpcEndpointServiceName: String?
    var XksProxyVpcEndpointServiceOwner: String?
    var XksProxyAuthenticationCredential: WireXksProxyCredential?
    var XksProxyConnectivity: String?

    var hasExternalKeyStoreMembers: Bool {
        XksProxyUriEndpoint != nil || XksProxyUriPath != nil || XksProxyVpcEndpointServiceName != nil
            || XksProxyVpcEndpointServiceOwner != nil || XksProxyAuthenticationCredential != nil || XksProxyConnectivity != nil
    }
}

struct CustomKeyStoreIDInput: Decodable, Sendable { var CustomKeyStoreId: String? }

extension KeyManagementService {
    func customKeyStoreOperations() -> [String: Operation] {
        [
            "CreateCustomKeyStore": .json(CreateCustomKeyStoreInput.self) { request, caller in
                let id = try await self.createCustomKeyStore(
                    .init(
                        name: request.CustomKeyStoreName, clusterID: request.CloudHsmClusterId,
                        trustAnchorCertificate: request.TrustAnchorCertificate, password: request.KeyStorePassword,
                        type: request.CustomKeyStoreType, hasExternalKeyStoreMembers: request.hasExternalKeyStoreMembers),
                    caller: caller)
                return CreateCustomKeyStoreOutput(CustomKeyStoreId: id)
            },
            "DescribeCustomKeyStores": .json(DescribeCustomKeyStoresInput.self) { request, caller in
                let page = try await self.describeCustomKeyStores(
                    id: request.CustomKeyStoreId, name: request.CustomKeyStoreName, limit: request.Limit, marker: request.Marker,
                    caller: caller)
                return DescribeCustomKeyStoresOutput(
                    CustomKeyStores: page.items.map {
                        .init(
                            CustomKeyStoreId: $0.record.id, CustomKeyStoreName: $0.record.name, CloudHsmClusterId: $0.record.clusterID,
                            TrustAnchorCertificate: $0.record.trustAnchorCertificate, ConnectionState: $0.state.rawValue,
                            ConnectionErrorCode: $0.connectionError?.rawValue, CreationDate: $0.record.creationDate,
                            CustomKeyStoreType: CustomKeyStoreType.awsCloudHSM.rawValue)
                    },
                    NextMarker: page.nextMarker, Truncated: page.nextMarker != nil)
            },
            "UpdateCustomKeyStore": .json(UpdateCustomKeyStoreInput.self) { request, caller in
                try await self.updateCustomKeyStore(
                    .init(
                        id: request.CustomKeyStoreId, newName: request.NewCustomKeyStoreName, password: request.KeyStorePassword,
                        clusterID: request.CloudHsmClusterId, hasExternalKeyStoreMembers: request.hasExternalKeyStoreMembers),
                    caller: caller)
                return EmptyObject()
            },
            "ConnectCustomKeyStore": .json(CustomKeyStoreIDInput.self) { request, caller in
                try await self.connectCustomKeyStore(request.CustomKeyStoreId, caller: caller)
                return EmptyObject()
            },
            "DisconnectCustomKeyStore": .json(CustomKeyStoreIDInput.self) { request, caller in
                try await self.disconnectCustomKeyStore(request.CustomKeyStoreId, caller: caller)
                return EmptyObject()
            },
            "DeleteCustomKeyStore": .json(CustomKeyStoreIDInput.self) { request, caller in
                try await self.deleteCustomKeyStore(request.CustomKeyStoreId, caller: caller)
                return EmptyObject()
            },
        ]
    }

    /// KeyMetadata with where a multi-Region key's related keys are, and with what a key of a custom key store adds:
    /// its store, its cluster or external key, and the state `Unavailable` while the store is not connected (as AWS
    /// shows it).
    func wireKeyMetadata(_ key: KeyRecord) async throws -> WireKeyMetadata {
        var metadata = WireKeyMetadata(key)
        metadata.CurrentKeyMaterialId = try await currentKeyMaterialID(of: key)
        metadata.MultiRegionConfiguration = try await multiRegionConfiguration(of: key).map(WireMultiRegionConfiguration.init)
        if let view = try await customKeyStoreView(of: key) {
            metadata.CustomKeyStoreId = view.storeID
            metadata.CloudHsmClusterId = view.clusterID
            metadata.XksKeyConfiguration = view.xksKeyID.map { WireXksKeyConfiguration(Id: $0) }
            if view.unavailable && key.state != .pendingDeletion {
                metadata.KeyState = KeyState.unavailable.rawValue
            }
        }
        return metadata
    }
}

/// `{}`: what the custom key store operations answer on success, as AWS does.
struct EmptyObject: Encodable, Sendable {}
