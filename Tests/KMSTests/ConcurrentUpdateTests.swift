import Foundation
import KMS
import KMSSQLite
import Synchronization
import Testing
import TrentTestSupport

/// Concurrent changes to one key on real SQLite: a change writes only what it changes, so a stream of
/// UpdateKeyDescription calls never undoes a PutKeyPolicy, an Enable/DisableKey, a rotation setting or a scheduled
/// deletion that committed meanwhile, and state rules hold for the row as it is written.
final class StopFlag: Sendable {
    private let value = Atomic(false)
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

@Suite struct ConcurrentUpdateTests {
    let hsm: TestHSM
    let caller = ServiceFixture.caller
    init() throws { hsm = try TestHSM.shared() }

    static func policy(_ n: Int) -> String {
        """
        {"Version":"2012-10-17","Id":"policy-\(n)","Statement":[{"Sid":"Enable IAM User Permissions",\
        "Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}
        """
    }

    /// Loops UpdateKeyDescription on `keyID` until stopped; counts the calls that succeeded.
    func describing(_ service: KeyManagementService, _ keyID: String, stop: StopFlag, tasks: Int = 2) -> Task<Int, any Error> {
        let caller = self.caller
        return Task {
            try await withThrowingTaskGroup(of: Int.self) { group in
                for worker in 0..<tasks {
                    group.addTask {
                        var done = 0
                        var n = 0
                        while !stop.isSet {
                            n += 1
                            do {
                                try await service.updateKeyDescription(keyID, description: "w\(worker)-\(n)", caller: caller)
                                done += 1
                            } catch let error as KMSError where error.code == .invalidState {
                                // Pending deletion: refused, as it must be.
                                await Task.yield()
                            }
                        }
                        return done
                    }
                }
                return try await group.reduce(0, +)
            }
        }
    }

    @Test func descriptionUpdatesUndoNoConcurrentChange() async throws {
        let fixture = try await hsm.makeService()
        let service = fixture.service
        let key = try await service.createKey(.init(description: "start"), caller: caller)
        let id = key.id.description
        let stop = StopFlag()
        let loop = describing(service, id, stop: stop)
        defer { stop.set() }

        var undone: [String] = []
        func settle() async throws { try await Task.sleep(for: .milliseconds(3)) }
        for n in 0..<40 {
            let text = Self.policy(n)
            try await service.putKeyPolicy(id, policy: text, policyName: nil, bypassLockoutCheck: false, caller: caller)
            try await settle()
            if try await service.getKeyPolicy(id, policyName: nil, caller: caller).policy != text { undone.append("PutKeyPolicy #\(n)") }

            let enable = n % 2 == 1
            if enable { try await service.enableKey(id, caller: caller) } else { try await service.disableKey(id, caller: caller) }
            try await settle()
            let state = try await service.describeKey(id, caller: caller).state
            if state != (enable ? .enabled : .disabled) { undone.append("\(enable ? "EnableKey" : "DisableKey") #\(n) (found \(state.rawValue))") }
        }
        try await service.enableKey(id, caller: caller)
        for n in 0..<10 {
            let days = 90 + n
            try await service.enableKeyRotation(id, periodInDays: days, caller: caller)
            try await settle()
            if try await service.getKeyRotationStatus(id, caller: caller).schedule?.periodInDays != days {
                undone.append("EnableKeyRotation #\(n)")
            }
        }
        try await service.disableKeyRotation(id, caller: caller)
        try await settle()
        if try await service.getKeyRotationStatus(id, caller: caller).schedule != nil { undone.append("DisableKeyRotation") }

        let scheduled = try await service.scheduleKeyDeletion(id, pendingWindowInDays: 7, caller: caller)
        try await Task.sleep(for: .milliseconds(30))
        let after = try await service.describeKey(id, caller: caller)
        if after.state != .pendingDeletion || after.deletionDate != scheduled.deletionDate {
            undone.append("ScheduleKeyDeletion (found \(after.state.rawValue), deletion date \(String(describing: after.deletionDate)))")
        }
        let cancelled = try await service.cancelKeyDeletion(id, caller: caller)
        #expect(cancelled.state == .disabled && cancelled.deletionDate == nil)
        try await settle()
        let end = try await service.describeKey(id, caller: caller)
        if end.state != .disabled || end.deletionDate != nil { undone.append("CancelKeyDeletion (found \(end.state.rawValue))") }

        stop.set()
        let described = try await loop.value
        #expect(described > 0, "the description loop ran")
        #expect(undone.isEmpty, "changes undone by a concurrent UpdateKeyDescription: \(undone)")
        #expect(end.policy == Self.policy(39))
    }

    /// Many writers, each changing its own attribute: at the end every last write is there.
    @Test func concurrentWritersOfDifferentAttributesAllLand() async throws {
        let service = try await hsm.makeService().service
        let id = try await service.createKey(.init(), caller: caller).id.description
        let caller = self.caller
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for n in 0..<60 { try await service.updateKeyDescription(id, description: "d\(n)", caller: caller) } }
            group.addTask {
                for n in 0..<60 {
                    try await service.putKeyPolicy(id, policy: Self.policy(n), policyName: nil, bypassLockoutCheck: true, caller: caller)
                }
            }
            group.addTask { for n in 0..<60 { try await service.enableKeyRotation(id, periodInDays: 90 + n, caller: caller) } }
            try await group.waitForAll()
        }
        let key = try await service.describeKey(id, caller: caller)
        #expect(key.description == "d59")
        #expect(key.policy == Self.policy(59))
        #expect(key.rotationSchedule?.periodInDays == 149)
        #expect(key.state == .enabled)
    }

    /// Two schedulers on one store (two nodes, or two processes on one SQLite file) rotate each due key once: a
    /// rotation is claimed by moving the next date on while the key is still due, and only one claim succeeds.
    @Test func twoSchedulersSharingAStoreRotateEachDueKeyOnce() async throws {
        let clock = ManualClock()
        let first = try await hsm.makeService(clock: clock)
        let second = try await hsm.makeService(clock: clock, databasePath: first.databasePath, provider: first.provider)
        var ids: [KeyID] = []
        for _ in 0..<6 {
            let key = try await first.service.createKey(.init(), caller: caller)
            try await first.service.enableKeyRotation(key.id.description, periodInDays: 90, caller: caller)
            ids.append(key.id)
        }
        let disabled = ids[5]
        clock.advance(by: 90 * 86_400)
        try await second.service.disableKeyRotation(disabled.description, caller: caller)

        async let one = first.service.rotateDueKeys()
        async let two = second.service.rotateDueKeys()
        let (a, b) = try await (one, two)
        #expect(Set(a).isDisjoint(with: b), "no key rotated by both")
        #expect(Set(a + b) == Set(ids.prefix(5)))
        for id in ids.prefix(5) {
            #expect(try await first.store.backingKeys(of: id).map(\.version) == [1, 2])
            let schedule = try #require(try await first.store.key(id)?.rotationSchedule)
            #expect(abs(schedule.nextRotationDate.timeIntervalSince(clock.now().addingTimeInterval(90 * 86_400))) < 0.001)
        }
        #expect(try await first.store.key(disabled)?.rotationSchedule == nil, "a rotation disabled meanwhile stays disabled")
        #expect(try await first.service.rotateDueKeys().isEmpty)
    }

    /// A scheduler that claimed a rotation and stopped (a crash) holds it only for the lease; then it is due again.
    @Test func aClaimedRotationIsDueAgainWhenItsLeaseEnds() async throws {
        let clock = ManualClock()
        let fixture = try await hsm.makeService(clock: clock)
        let key = try await fixture.service.createKey(.init(), caller: caller)
        try await fixture.service.enableKeyRotation(key.id.description, periodInDays: 90, caller: caller)
        clock.advance(by: 90 * 86_400)
        let current = try #require(try await fixture.store.key(key.id)?.rotationSchedule)
        let lease = RotationSchedule(
            periodInDays: 90, nextRotationDate: clock.now().addingTimeInterval(KeyManagementService.rotationClaimLease))
        let claim = KeyCondition(states: [.enabled], rotationDueBy: clock.now(), rotationSchedule: current)
        #expect(try await fixture.store.updateKey(key.id, .rotationSchedule(lease), if: claim) != nil)  // ... and the claimer stops

        #expect(try await fixture.service.rotateDueKeys().isEmpty, "claimed by another")
        clock.advance(by: KeyManagementService.rotationClaimLease)
        #expect(try await fixture.service.rotateDueKeys() == [key.id])
        #expect(try await fixture.store.backingKeys(of: key.id).map(\.version) == [1, 2])
        let next = try #require(try await fixture.store.key(key.id)?.rotationSchedule?.nextRotationDate)
        #expect(next > clock.now().addingTimeInterval(89 * 86_400))
    }

    /// A change that requires a state is refused when the row no longer has it at the moment of writing: once
    /// ScheduleKeyDeletion has returned, no description or policy change lands, and the deletion stays scheduled.
    @Test func aScheduledDeletionIsNeverClearedAndRefusesLaterChanges() async throws {
        let service = try await hsm.makeService().service
        for _ in 0..<5 {
            let id = try await service.createKey(.init(description: "start"), caller: caller).id.description
            let stop = StopFlag()
            let loop = describing(service, id, stop: stop, tasks: 3)
            try await Task.sleep(for: .milliseconds(5))
            let scheduled = try await service.scheduleKeyDeletion(id, pendingWindowInDays: 7, caller: caller)
            let description = try await service.describeKey(id, caller: caller).description
            try await Task.sleep(for: .milliseconds(20))
            stop.set()
            _ = try await loop.value
            let after = try await service.describeKey(id, caller: caller)
            #expect(after.state == .pendingDeletion)
            #expect(after.deletionDate == scheduled.deletionDate)
            #expect(after.pendingWindowInDays == 7)
            #expect(after.description == description, "no description change lands after the deletion was scheduled")
        }
    }
}
