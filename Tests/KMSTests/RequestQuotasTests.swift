import Foundation
import JSON
import KMS
import Synchronization
import Testing

/// The token buckets of the request quotas (RequestQuotas.swift), on a clock the test moves.
@Suite struct RequestQuotasTests {
    /// A clock the test sets, in seconds.
    final class TestClock: Sendable {
        let seconds = Mutex<Double>(1_000)
        func advance(_ by: Double) { seconds.withLock { $0 += by } }
        var now: @Sendable () -> Double { { self.seconds.withLock { $0 } } }
    }

    /// How many of `count` requests at `now` the bucket admits.
    func admitted(_ bucket: inout TokenBucket, _ count: Int, now: Double) -> Int {
        var admitted = 0
        for _ in 0..<count where bucket.take(now: now) { admitted += 1 }
        return admitted
    }

    @Test func aFullBucketAllowsItsBurstThenRefusesUntilItRefills() {
        var bucket = TokenBucket(rate: 10, burst: 10, now: 0)
        let burst = admitted(&bucket, 11, now: 0)
        // A tenth of a second brings back exactly one token.
        let refilled = admitted(&bucket, 2, now: 0.1)
        // Idle time refills up to the burst, never beyond.
        let afterIdle = admitted(&bucket, 20, now: 100)
        #expect([burst, refilled, afterIdle] == [10, 1, 10] as [Int])
    }

    @Test func aRateBelowOneAllowsOneRequestPerInterval() {
        var bucket = TokenBucket(rate: 0.25, burst: 1, now: 0)
        let counts = [admitted(&bucket, 2, now: 0), admitted(&bucket, 1, now: 3.9), admitted(&bucket, 2, now: 4.0)]
        #expect(counts == [1, 0, 1] as [Int])
    }

    @Test func aClockGoingBackwardsAddsNothing() {
        var bucket = TokenBucket(rate: 1, burst: 1, now: 10)
        let counts = [
            admitted(&bucket, 1, now: 10), admitted(&bucket, 1, now: 5), admitted(&bucket, 1, now: 10.5), admitted(&bucket, 1, now: 11),
        ]
        #expect(counts == [1, 0, 0, 1] as [Int])
    }

    @Test func accountsAndQuotasHaveBucketsOfTheirOwn() {
        let clock = TestClock()
        let quotas = RequestQuotas(rates: ["symmetric": 3, "CreateKey": 2], now: clock.now)
        #expect((0..<3).allSatisfy { _ in quotas.admit(account: "111122223333", region: "us-east-1", quota: "symmetric") })
        #expect(!quotas.admit(account: "111122223333", region: "us-east-1", quota: "symmetric"))
        // Another account is not affected, nor another quota of the same account.
        #expect((0..<3).allSatisfy { _ in quotas.admit(account: "444455556666", region: "us-east-1", quota: "symmetric") })
        #expect((0..<2).allSatisfy { _ in quotas.admit(account: "111122223333", region: "us-east-1", quota: "CreateKey") })
        #expect(!quotas.admit(account: "111122223333", region: "us-east-1", quota: "CreateKey"))
        clock.advance(1)
        #expect((0..<3).allSatisfy { _ in quotas.admit(account: "111122223333", region: "us-east-1", quota: "symmetric") })
        #expect(!quotas.admit(account: "111122223333", region: "us-east-1", quota: "symmetric"))
    }

    @Test func anAccountOverrideReplacesTheRateForThatAccountOnly() throws {
        let clock = TestClock()
        let quotas = RequestQuotas(
            rates: ["symmetric": 2], accountRates: ["444455556666": ["symmetric": 5], "777788889999": ["symmetric": 0]], now: clock.now)
        #expect(quotas.rate(account: "111122223333", quota: "symmetric") == 2)
        #expect(quotas.rate(account: "444455556666", quota: "symmetric") == 5)
        #expect((0..<5).allSatisfy { _ in quotas.admit(account: "444455556666", region: "us-east-1", quota: "symmetric") })
        #expect(!quotas.admit(account: "444455556666", region: "us-east-1", quota: "symmetric"))
        #expect((0..<2).allSatisfy { _ in quotas.admit(account: "111122223333", region: "us-east-1", quota: "symmetric") })
        #expect(!quotas.admit(account: "111122223333", region: "us-east-1", quota: "symmetric"))
        // 0 means no limit, and so does a quota with no rate.
        #expect((0..<1000).allSatisfy { _ in quotas.admit(account: "777788889999", region: "us-east-1", quota: "symmetric") })
        #expect((0..<1000).allSatisfy { _ in quotas.admit(account: "111122223333", region: "us-east-1", quota: "ListKeyRotations") })
        #expect(throws: Never.self) { try quotas.charge(account: "777788889999", region: "us-east-1", quota: "symmetric") }
        let error = #expect(throws: KMSError.self) { try quotas.charge(account: "111122223333", region: "us-east-1", quota: "symmetric") }
        #expect(error?.code.rawValue == "ThrottlingException")
        #expect(error?.message == "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.")
    }

    @Test func concurrentRequestsNeverGetMoreThanTheBurst() async {
        let clock = TestClock()
        let quotas = RequestQuotas(rates: ["symmetric": 100], now: clock.now)
        let admitted = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask { (0..<100).filter { _ in quotas.admit(account: "111122223333", region: "us-east-1", quota: "symmetric") }.count }
            }
            return await group.reduce(0, +)
        }
        #expect(admitted == 100)
    }

    @Test func requestsAreClassedByOperationAndNeverByKeyBeforeAuthorization() {
        #expect(RequestQuotas.plan(operation: "CreateKey", request: [:]) == .quota("CreateKey"))
        #expect(RequestQuotas.plan(operation: "GenerateRandom", request: [:]) == .quota("symmetric"))
        #expect(RequestQuotas.plan(operation: "Encrypt", request: ["KeyId": "alias/x"]) == .byKey)
        #expect(RequestQuotas.plan(operation: "Sign", request: [:]) == .byKey)
        #expect(RequestQuotas.plan(operation: "GenerateDataKeyPair", request: ["KeyPairSpec": "RSA_2048"]) == .quota("GenerateDataKeyPair_RSA_2048"))
        #expect(
            RequestQuotas.plan(operation: "GenerateDataKeyPairWithoutPlaintext", request: ["KeyPairSpec": "ECC_NIST_P256"])
                == .quota("GenerateDataKeyPair_ECC_NIST_P256"))
        #expect(RequestQuotas.plan(operation: "GenerateDataKeyPair", request: ["KeyPairSpec": "nonsense"]) == .quota("symmetric"))
        #expect(RequestQuotas.plan(operation: "ListKeyRotations", request: [:]) == .unlimited)
    }
}
