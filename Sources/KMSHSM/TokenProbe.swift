public import PKCS11

/// What a token offers, checked against what Trent needs: used at startup (refuse to serve when a needed
/// mechanism is missing) and by `trent token probe` (so an operator can check a new HSM before trusting it).
public enum TokenProbe {
    public struct Check: Sendable, Encodable {
        public var feature: String
        public var passed: Bool
        public var detail: String
        /// Whether Trent needs it to serve today (the other features come with later key types).
        public var required: Bool = true
    }

    /// The mechanisms each Trent feature needs.
    public static func features(_ profile: HSMProfile) throws -> [(feature: String, mechanisms: [MechanismType])] {
        func named(_ names: String...) throws -> [MechanismType] { try names.map { try HSMProfile.mechanism($0, "probe") } }
        var features: [(String, [MechanismType])] = [
            ("symmetric keys: AES-256 backing keys, AES-GCM, RFC 3394 wrap", [.aesKeyGen, .aesGCM, try profile.rfc3394Mechanism()]),
            ("HMAC keys", try named("CKM_GENERIC_SECRET_KEY_GEN", "CKM_SHA224_HMAC", "CKM_SHA256_HMAC", "CKM_SHA384_HMAC", "CKM_SHA512_HMAC")),
            ("RSA keys: generation, OAEP, PSS and PKCS#1 v1.5", try named("CKM_RSA_PKCS_KEY_PAIR_GEN", "CKM_RSA_PKCS_OAEP", "CKM_RSA_PKCS_PSS", "CKM_RSA_PKCS", "CKM_RSA_X_509")),
            ("ECC keys: generation and ECDSA", try named("CKM_EC_KEY_PAIR_GEN", "CKM_ECDSA")),
            ("ECDH key agreement", try named("CKM_ECDH1_DERIVE")),
        ]
        if let rfc5649 = profile.keyWrap.rfc5649 {
            features.append(("RFC 5649 wrap (imported and non-AES material)", [try HSMProfile.mechanism(rfc5649, "keyWrap.rfc5649")]))
        }
        return features
    }

    /// The mechanisms the features Trent serves today need (symmetric keys).
    public static func required(_ profile: HSMProfile) throws -> [MechanismType] {
        try features(profile)[0].mechanisms
    }

    /// Refuses a token that lacks a mechanism Trent needs, with one line naming it.
    public static func requireMechanisms(of token: Token, profile: HSMProfile) throws {
        let offered = Set(try token.module.mechanisms(slot: token.slot))
        let missing = try required(profile).filter { !offered.contains($0) }
        guard missing.isEmpty else {
            throw HSMSetupError(
                "token '\(token.label)' lacks \(missing.map { "\($0.name) (0x\(String($0.rawValue, radix: 16)))" }.joined(separator: ", ")), which Trent needs for symmetric keys (profile '\(profile.name)'); run `trent token probe`")
        }
    }

    /// Feature checks from the mechanism list, then live checks of the quirks the profile records.
    public static func run(on token: Token, profile: HSMProfile) throws -> [Check] {
        let offered = Set(try token.module.mechanisms(slot: token.slot))
        var checks = try features(profile).enumerated().map { index, feature in
            let missing = feature.mechanisms.filter { !offered.contains($0) }
            return Check(
                feature: feature.feature, passed: missing.isEmpty,
                detail: missing.isEmpty
                    ? "all of \(feature.mechanisms.map(\.name).joined(separator: ", "))" : "missing \(missing.map(\.name).joined(separator: ", "))",
                required: index == 0)
        }
        checks.append(contentsOf: liveChecks(on: token, profile: profile))
        return checks
    }

    private static func liveChecks(on token: Token, profile: HSMProfile) -> [Check] {
        var checks: [Check] = []
        func check(_ feature: String, _ body: () throws -> String) {
            do {
                checks.append(Check(feature: feature, passed: true, detail: try body()))
            } catch {
                checks.append(Check(feature: feature, passed: false, detail: "\(error)"))
            }
        }
        let plain: [Attribute] = [
            .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32), Attribute(.token, false),
            Attribute(.sensitive, true), Attribute(.extractable, true), Attribute(.encrypt, true), Attribute(.decrypt, true),
            Attribute(.wrap, true), Attribute(.unwrap, true),
        ]
        let template = plain + [.allowedMechanisms([.aesGCM])]
        check("AES-GCM with additional data, IV made as the profile says (\(profile.gcm.ivSource.rawValue))") {
            try token.withSession { session throws(PKCS11Error) in
                let key = try session.generateKey(.aesKeyGen, template: template)
                defer { try? session.destroyObject(key) }
                let (iv, sealed) = try session.sealGCM(Array("probe".utf8), key: key, additionalData: [1, 2, 3])
                guard try session.decrypt(sealed, key: key, mechanism: .aesGCM(iv: iv, additionalData: [1, 2, 3])) == Array("probe".utf8) else {
                    throw PKCS11Error(.functionFailed, in: .decrypt, detail: "round trip returned other bytes")
                }
                return "round trip ok, \(sealed.count) bytes for 5"
            }
        }
        check("a failed GCM tag is reported as \(profile.authenticationFailureCodes.joined(separator: " or "))") {
            let expected = try profile.authenticationFailures()
            let outcome = try token.withSession { session throws(PKCS11Error) -> PKCS11Error? in
                let key = try session.generateKey(.aesKeyGen, template: template)
                defer { try? session.destroyObject(key) }
                let (iv, sealed) = try session.sealGCM([7], key: key, additionalData: [1])
                do throws(PKCS11Error) {
                    _ = try session.decrypt(sealed, key: key, mechanism: .aesGCM(iv: iv, additionalData: [2]))
                    return nil
                } catch {
                    return error
                }
            }
            guard let outcome else { throw HSMSetupError("the token accepted a wrong tag") }
            guard expected.contains(outcome.returnValue) else { throw HSMSetupError("the token said \(outcome.returnValue): update authenticationFailureCodes") }
            return "\(outcome.returnValue)"
        }
        check("RFC 3394 key wrap round trip (\(profile.keyWrap.rfc3394))") {
            let mechanism = try profile.rfc3394Mechanism()
            return try token.withSession { session throws(PKCS11Error) in
                let wrapping = try session.generateKey(.aesKeyGen, template: plain)
                let key = try session.generateKey(.aesKeyGen, template: plain)
                defer { for object in [wrapping, key] { try? session.destroyObject(object) } }
                let wrapped = try session.wrapKey(key, with: wrapping, mechanism: .keyWrap(mechanism))
                let unwrapped = try session.unwrapKey(wrapped, with: wrapping, mechanism: .keyWrap(mechanism), template: [
                    .objectClass(.secretKey), .keyType(.aes), Attribute(.token, false), Attribute(.encrypt, true), Attribute(.decrypt, true),
                ])
                try session.destroyObject(unwrapped)
                return "\(wrapped.count) bytes for a 32-byte key"
            }
        }
        check("a key with CKA_EXTRACTABLE false cannot be wrapped out: \(profile.enforcesNonExtractable ? "yes" : "no, a development token only")") {
            let mechanism = try profile.rfc3394Mechanism()
            let refused: Bool = try token.withSession { session throws(PKCS11Error) in
                let wrapping = try session.generateKey(.aesKeyGen, template: plain)
                let key = try session.generateKey(.aesKeyGen, template: plain.filter { $0.type != .extractable } + [Attribute(.extractable, false)])
                defer { for object in [wrapping, key] { try? session.destroyObject(object) } }
                do throws(PKCS11Error) {
                    _ = try session.wrapKey(key, with: wrapping, mechanism: .keyWrap(mechanism))
                    return false
                } catch {
                    return true
                }
            }
            guard refused == profile.enforcesNonExtractable else {
                throw HSMSetupError("the token \(refused ? "refuses" : "allows") wrapping a non-extractable key: update the profile")
            }
            return refused ? "refused" : "the token wrapped it, as the profile says"
        }
        check("CKA_ALLOWED_MECHANISMS enforced: \(profile.allowedMechanisms.enforced ? "yes" : "no, \(profile.allowedMechanisms.compensation ?? "")")") {
            let refused: Bool = try token.withSession { session throws(PKCS11Error) in
                let key = try session.generateKey(.aesKeyGen, template: template)
                defer { try? session.destroyObject(key) }
                do throws(PKCS11Error) {
                    _ = try session.encrypt(Array(repeating: 0, count: 16), key: key, mechanism: .keyWrap(.aesECB))
                    return false
                } catch {
                    return true
                }
            }
            guard refused == profile.allowedMechanisms.enforced else {
                throw HSMSetupError("the token \(refused ? "enforces" : "does not enforce") CKA_ALLOWED_MECHANISMS: update the profile")
            }
            return refused ? "AES-ECB refused on a GCM-only key" : "AES-ECB accepted on a GCM-only key, as the profile says"
        }
        check("private keys wrapped and unwrapped again (RFC 5649): \(profile.keyPairFamilies.map(\.rawValue).joined(separator: " and ")) as the profile says") {
            guard let name = profile.keyWrap.rfc5649 else { throw HSMSetupError("the profile names no RFC 5649 mechanism") }
            let mechanism = try HSMProfile.mechanism(name, "keyWrap.rfc5649")
            var results: [String] = []
            for family in [HSMProfile.KeyPairFamily.rsa, .ec] {
                let works = privateKeyRoundTrip(family, mechanism: mechanism, on: token)
                guard works == profile.keyPairFamilies.contains(family) else {
                    throw HSMSetupError("the token \(works ? "can" : "cannot") unwrap the \(family.rawValue) private keys it wraps: update keyPairFamilies")
                }
                results.append("\(family.rawValue) \(works ? "yes" : "no")")
            }
            return results.joined(separator: ", ")
        }
        return checks
    }

    /// Whether a private key of `family` survives wrapping and unwrapping under a session AES key.
    private static func privateKeyRoundTrip(_ family: HSMProfile.KeyPairFamily, mechanism: MechanismType, on token: Token) -> Bool {
        let result = try? token.withSession { session throws(PKCS11Error) -> Bool in
            let wrapping = try session.generateKey(.aesKeyGen, template: [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32), Attribute(.token, false),
                Attribute(.wrap, true), Attribute(.unwrap, true),
            ])
            defer { try? session.destroyObject(wrapping) }
            let keyType: KeyType = family == .rsa ? .rsa : .ec
            let publicTemplate: [Attribute] =
                family == .rsa
                ? [Attribute(.modulusBits, ulong: 2048), Attribute(.publicExponent, bytes: [1, 0, 1])]
                : [Attribute(.ecParams, bytes: AsymmetricEncoding.p256.parameters)]
            let pair = try session.generateKeyPair(
                family == .rsa ? .rsaKeyPairGen : .ecKeyPairGen,
                publicTemplate: [.objectClass(.publicKey), .keyType(keyType), Attribute(.token, false)] + publicTemplate,
                privateTemplate: [
                    .objectClass(.privateKey), .keyType(keyType), Attribute(.token, false), Attribute(.sensitive, true),
                    Attribute(.extractable, true), Attribute(.sign, true),
                ])
            defer { for object in [pair.publicKey, pair.privateKey] { try? session.destroyObject(object) } }
            let wrapped = try session.wrapKey(pair.privateKey, with: wrapping, mechanism: .keyWrap(mechanism))
            let unwrapped = try session.unwrapKey(wrapped, with: wrapping, mechanism: .keyWrap(mechanism), template: [
                .objectClass(.privateKey), .keyType(keyType), Attribute(.token, false), Attribute(.sign, true),
            ])
            try? session.destroyObject(unwrapped)
            return true
        }
        return result ?? false
    }
}
