import Logging

/// One-time work after an upgrade of the store.
extension KeyManagementService {
    /// Carries secret backing keys bound the earlier way (a proof made by the key itself, which GenerateMac could
    /// compute for another key's id) over to the sealing key's binding. Each earlier proof is checked in the token
    /// first; a key whose proof does not hold keeps it and stays unusable. Runs at startup; after the first run the
    /// list is empty and this costs one query.
    @discardableResult
    public func carryOverLegacyBindings() async throws -> (carried: Int, refused: Int) {
        var (carried, refused) = (0, 0)
        for backingKey in try await store.legacyBoundBackingKeys() {
            guard let key = try await store.key(backingKey.keyID), let kind = key.keySpec.backingKeyKind else {
                try await store.finishCarryingOver(backingKey.keyID, version: backingKey.version, binding: nil)
                continue
            }
            let binding = try await provider.rebind(backingKey, kind: kind)
            try await store.finishCarryingOver(backingKey.keyID, version: backingKey.version, binding: binding)
            if binding == nil {
                refused += 1
                logger.error(
                    "a stored backing key's earlier binding does not hold; it stays unusable",
                    metadata: ["kms.key.id": "\(backingKey.keyID)", "kms.backing_key.version": "\(backingKey.version)"])
            } else {
                carried += 1
            }
        }
        if carried + refused > 0 {
            logger.info("carried backing keys over to sealing-key bindings", metadata: ["kms.carried": "\(carried)", "kms.refused": "\(refused)"])
        }
        return (carried, refused)
    }
}
