import Synchronization

/// Collects the keys a request touched, for its audit record. The HTTP layer binds one per request with
/// `AuditResources.$current`; the authorizer adds every key it decides on, allowed or denied.
public final class AuditResources: Sendable {
    public struct Resource: Sendable, Equatable {
        public var arn: String
        public var accountID: String
    }

    @TaskLocal public static var current: AuditResources?

    private let collected = Mutex<[Resource]>([])

    public init() {}

    func add(arn: String, accountID: String) {
        collected.withLock { resources in
            let resource = Resource(arn: arn, accountID: accountID)
            if !resources.contains(resource) { resources.append(resource) }
        }
    }

    public var resources: [Resource] { collected.withLock { $0 } }
}
