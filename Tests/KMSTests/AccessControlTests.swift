import Foundation
import KMS
import KMSSQLite
import Testing
import TrentTestSupport

/// Identities, policies and grants through the service, on SoftHSM and SQLite.
@Suite struct AccessControlTests {
    let hsm: TestHSM
    let admin = ServiceFixture.caller
    init() throws { hsm = try TestHSM.shared() }

    func user(_ name: String, in fixture: ServiceFixture, policy: String? = nil, account: String = "111122223333") async throws -> Caller {
        let principal = try await fixture.directory.createPrincipal(kind: .user, accountID: account, name: name)
        if let policy { try await fixture.directory.putIdentityPolicy(principalARN: principal.arn, name: "p", document: policy) }
        return Caller(accountID: account, principalARN: principal.arn, accessKeyID: "AKIA\(name.uppercased())0000000000")
    }

    func code(_ body: () async throws -> Void) async -> KMSError.Code? {
        do {
            try await body()
            return nil
        } catch let error as KMSError {
            return error.code
        } catch {
            return nil
        }
    }

    @Test func secretsAreStoredOnlySealedAndAtMostTwoPerPrincipal() async throws {
        let fixture = try await hsm.makeService()
        let alice = try await user("alice", in: fixture)
        let first = try await fixture.directory.createAccessKey(for: alice.principalARN)
        let second = try await fixture.directory.createAccessKey(for: alice.principalARN)
        #expect(await code { _ = try await fixture.directory.createAccessKey(for: alice.principalARN) } == .limitExceeded)
        let (found, _) = try #require(try await fixture.directory.credential(for: first.accessKeyID))
        #expect(found.secretAccessKey == first.secretAccessKey && found.principal.arn == alice.principalARN)
        let bytes = fixture.databaseBytes()
        #expect(bytes.containsSequence(Array(first.accessKeyID.utf8)), "the search must find what is stored")
        #expect(!bytes.containsSequence(Array(first.secretAccessKey.utf8)))
        #expect(!bytes.containsSequence(Array(second.secretAccessKey.utf8)))
        try await fixture.directory.setAccessKeyStatus(first.accessKeyID, .inactive)
        #expect(try await fixture.directory.credential(for: first.accessKeyID) == nil)
        #expect(try await fixture.directory.credential(for: second.accessKeyID) != nil)
    }

    @Test func theDefaultKeyPolicyDelegatesToIdentityPolicies() async throws {
        let fixture = try await hsm.makeService()
        let service = fixture.service
        let key = try await service.createKey(.init(), caller: admin)
        let alice = try await user("alice", in: fixture, policy: #"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:Describe*","Resource":"*"}}"#)
        let bob = try await user("bob", in: fixture)
        #expect(try await service.describeKey(key.id.description, caller: alice).id == key.id)
        #expect(await code { _ = try await service.describeKey(key.id.description, caller: bob) } == .accessDenied)
        #expect(await code {
            _ = try await service.encrypt(keyID: key.id.description, plaintext: [1], context: .init(), algorithm: nil, dryRun: nil, caller: alice)
        } == .accessDenied)
        #expect(await code { _ = try await service.createKey(.init(), caller: bob) } == .accessDenied)
    }

    @Test func anAliasOpensNoDoorTheKeyPolicyKeepsShut() async throws {
        let fixture = try await hsm.makeService()
        let service = fixture.service
        let key = try await service.createKey(.init(), caller: admin)
        try await service.createAlias("alias/shut", targetKeyID: key.id.description, caller: admin)
        let bob = try await user("bob", in: fixture, policy: #"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Resource":"arn:aws:kms:*:*:alias/shut"}}"#)
        for identifier in ["alias/shut", "arn:aws:kms:us-east-1:111122223333:alias/shut"] {
            #expect(await code { _ = try await service.describeKey(identifier, caller: bob) } == .accessDenied)
        }
    }

    @Test func grantsAllowExactlyTheirOperationsWithinTheirConstraints() async throws {
        let fixture = try await hsm.makeService()
        let service = fixture.service
        let key = try await service.createKey(.init(), caller: admin)
        let other = try await service.createKey(.init(), caller: admin)
        let bob = try await user("bob", in: fixture)
        let grant = try await service.createGrant(
            .init(keyID: key.id.description, granteePrincipal: bob.principalARN, operations: ["Encrypt"],
                  constraints: GrantConstraints(encryptionContextSubset: ["app": "x"])),
            caller: admin)
        #expect(grant.grantID.count == 64)
        let allowed = try await service.encrypt(
            keyID: key.id.description, plaintext: [1], context: EncryptionContext(["app": "x", "more": "y"]), algorithm: nil, dryRun: nil, caller: bob)
        #expect(!allowed.ciphertextBlob.isEmpty)
        for (keyID, context) in [(key.id.description, ["app": "y"]), (key.id.description, [:]), (other.id.description, ["app": "x"])] {
            #expect(await code {
                _ = try await service.encrypt(keyID: keyID, plaintext: [1], context: EncryptionContext(context), algorithm: nil, dryRun: nil, caller: bob)
            } == .accessDenied)
        }
        #expect(await code {
            _ = try await service.decrypt(ciphertext: allowed.ciphertextBlob, context: EncryptionContext(["app": "x", "more": "y"]), keyID: nil, algorithm: nil, dryRun: nil, caller: bob)
        } == .accessDenied)
        try await service.revokeGrant(keyID: key.id.description, grantID: grant.grantID, dryRun: nil, caller: admin)
        #expect(await code {
            _ = try await service.encrypt(keyID: key.id.description, plaintext: [1], context: EncryptionContext(["app": "x"]), algorithm: nil, dryRun: nil, caller: bob)
        } == .accessDenied)
    }

    @Test func aPolicyThatLocksTheCallerOutIsRefusedUnlessBypassed() async throws {
        let fixture = try await hsm.makeService()
        let service = fixture.service
        let key = try await service.createKey(.init(), caller: admin)
        let lockout = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/someone-else"},"Action":"kms:*","Resource":"*"}]}"#
        #expect(await code {
            try await service.putKeyPolicy(key.id.description, policy: lockout, policyName: nil, bypassLockoutCheck: false, caller: admin)
        } == .malformedPolicyDocument)
        #expect(await code {
            try await service.putKeyPolicy(key.id.description, policy: "{not json", policyName: nil, bypassLockoutCheck: false, caller: admin)
        } == .malformedPolicyDocument)
        try await service.putKeyPolicy(key.id.description, policy: lockout, policyName: nil, bypassLockoutCheck: true, caller: admin)
        #expect(await code { _ = try await service.getKeyPolicy(key.id.description, policyName: nil, caller: admin) } == .accessDenied)
    }
}
