import KMS
import Synchronization

struct NonceReservation: Sendable {
    var keyID: KeyID
    var version: UInt32
    var reserved: UInt64
}

/// Batches concurrent writes: the first caller writes its item; items that arrive meanwhile wait and are written
/// together by one call of the next round. Every caller returns (or throws) when the write holding its item did.
final class GroupCommit<Item: Sendable>: Sendable {
    private struct Waiting {
        var item: Item
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var waiting: [Waiting] = []
        var writing = false
    }

    private let state = Mutex(State())

    func submit(_ item: Item, write: @escaping @Sendable ([Item]) async throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let start = state.withLock { state -> Bool in
                state.waiting.append(Waiting(item: item, continuation: continuation))
                guard !state.writing else { return false }
                state.writing = true
                return true
            }
            if start {
                Task { await self.drain(write) }
            }
        }
    }

    private func drain(_ write: @Sendable ([Item]) async throws -> Void) async {
        while true {
            let batch = state.withLock { state -> [Waiting] in
                let batch = state.waiting
                state.waiting.removeAll()
                if batch.isEmpty { state.writing = false }
                return batch
            }
            if batch.isEmpty { return }
            do {
                try await write(batch.map(\.item))
                for waiting in batch { waiting.continuation.resume() }
            } catch {
                for waiting in batch { waiting.continuation.resume(throwing: error) }
            }
        }
    }
}
