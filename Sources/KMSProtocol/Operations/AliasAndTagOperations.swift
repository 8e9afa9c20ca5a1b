import Foundation
import KMS

struct AliasRequest: Decodable, Sendable {
    var AliasName: String?
    var TargetKeyId: String?
}

struct ListAliasesRequest: Decodable, Sendable {
    var KeyId: String?
    var Limit: Int?
    var Marker: String?
}

struct ListAliasesResponse: Encodable, Sendable {
    struct Entry: Encodable, Sendable {
        var AliasName: String
        var AliasArn: String
        var TargetKeyId: String
        var CreationDate: Date
        var LastUpdatedDate: Date
    }
    var Aliases: [Entry]
    var NextMarker: String?
    var Truncated: Bool
}

struct TagResourceRequest: Decodable, Sendable {
    var KeyId: String?
    var Tags: [WireTag]?
}

struct UntagResourceRequest: Decodable, Sendable {
    var KeyId: String?
    var TagKeys: [String]?
}

struct ListResourceTagsRequest: Decodable, Sendable {
    var KeyId: String?
    var Limit: Int?
    var Marker: String?
}

struct ListResourceTagsResponse: Encodable, Sendable {
    var Tags: [WireTag]
    var NextMarker: String?
    var Truncated: Bool
}

extension KeyManagementService {
    func aliasAndTagOperations() -> [String: Operation] {
        return [
            "CreateAlias": .json(AliasRequest.self) { request, caller in
                try await self.createAlias(
                    try required(request.AliasName, "AliasName"), targetKeyID: try required(request.TargetKeyId, "TargetKeyId"),
                    caller: caller)
                return NoOutput()
            },
            "UpdateAlias": .json(AliasRequest.self) { request, caller in
                try await self.updateAlias(
                    try required(request.AliasName, "AliasName"), targetKeyID: try required(request.TargetKeyId, "TargetKeyId"),
                    caller: caller)
                return NoOutput()
            },
            "DeleteAlias": .json(AliasRequest.self) { request, caller in
                try await self.deleteAlias(try required(request.AliasName, "AliasName"), caller: caller)
                return NoOutput()
            },
            "ListAliases": .json(ListAliasesRequest.self) { request, caller in
                let page = try await self.listAliases(keyID: request.KeyId, limit: request.Limit, marker: request.Marker, caller: caller)
                return ListAliasesResponse(
                    Aliases: page.items.map {
                        .init(
                            AliasName: $0.name, AliasArn: ServiceLocation.aliasARN($0.name, account: $0.accountID, region: $0.region), TargetKeyId: $0.targetKeyID.description,
                            CreationDate: $0.creationDate, LastUpdatedDate: $0.lastUpdatedDate)
                    },
                    NextMarker: page.nextMarker, Truncated: page.nextMarker != nil)
            },
            "TagResource": .json(TagResourceRequest.self) { request, caller in
                let tags = try required(request.Tags, "Tags").map { try $0.domain() }
                try await self.tagResource(try required(request.KeyId, "KeyId"), tags: tags, caller: caller)
                return NoOutput()
            },
            "UntagResource": .json(UntagResourceRequest.self) { request, caller in
                try await self.untagResource(
                    try required(request.KeyId, "KeyId"), tagKeys: try required(request.TagKeys, "TagKeys"), caller: caller)
                return NoOutput()
            },
            "ListResourceTags": .json(ListResourceTagsRequest.self) { request, caller in
                let page = try await self.listResourceTags(
                    try required(request.KeyId, "KeyId"), limit: request.Limit, marker: request.Marker, caller: caller)
                return ListResourceTagsResponse(
                    Tags: page.items.map(WireTag.init), NextMarker: page.nextMarker, Truncated: page.nextMarker != nil)
            },
        ]
    }
}
