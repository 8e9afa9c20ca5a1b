import KMS
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
        check("private keys wrapped and unwrapped again (RFC 5649) with Trent's template\(profile.privateKeyUnwrap?.ecTemplateAttribute.map { " (EC: + \($0.type) = \($0.value.rawValue))" } ?? ""): \(profile.keyPairFamilies.map(\.rawValue).joined(separator: " and ")) as the profile says") {
            guard let name = profile.keyWrap.rfc5649 else { throw HSMSetupError("the profile names no RFC 5649 mechanism") }
            let mechanism = try HSMProfile.mechanism(name, "keyWrap.rfc5649")
            var results: [String] = []
            for family in [HSMProfile.KeyPairFamily.rsa, .ec] {
                let outcome = Result { try privateKeyRoundTrip(family, profile: profile, mechanism: mechanism, on: token) }
                let works = (try? outcome.get()) != nil
                guard works == profile.keyPairFamilies.contains(family) else {
                    let reason = (try? outcome.get()) ?? (outcome.failureDescription ?? "")
                    throw HSMSetupError("the token \(works ? "can" : "cannot") unwrap the \(family.rawValue) private keys it wraps (\(reason)): update keyPairFamilies or privateKeyUnwrap")
                }
                results.append("\(family.rawValue) \(works ? "yes: \((try? outcome.get()) ?? "")" : "no")")
            }
            return results.joined(separator: "; ")
        }
        check("EC curves the token generates: \((profile.ecCurves ?? HSMProfile.curveNames).joined(separator: ", ")) as the profile says (ecCurves)") {
            var results: [String] = []
            for spec in [KeyPairSpec.eccNistP256, .eccNistP384, .eccNistP521, .eccSecgP256k1] {
                let curve = AsymmetricEncoding.curve(of: spec)!
                let refusal: PKCS11Error? = try token.withSession { session throws(PKCS11Error) -> PKCS11Error? in
                    do throws(PKCS11Error) {
                        let pair = try generateECPair(curve, privateTemplate: [Attribute(.sign, true)], in: session)
                        for object in [pair.publicKey, pair.privateKey] { try? session.destroyObject(object) }
                        return nil
                    } catch where error.function == .generateKeyPair {
                        return error
                    }
                }
                guard (refusal == nil) == profile.generatesCurve(of: spec) else {
                    throw HSMSetupError("the token \(refusal == nil ? "generates" : "does not generate (\(refusal!.returnValue))") \(curve.name) keys: update ecCurves")
                }
                results.append("\(curve.name) \(refusal.map { "no (\($0.returnValue))" } ?? "yes")")
            }
            return results.joined(separator: ", ")
        }
        check("usage attributes the token turns on when it unwraps a private key, as the profile says (privateKeyUnwrap.forcedTrue)") {
            guard let name = profile.keyWrap.rfc5649 else { throw HSMSetupError("the profile names no RFC 5649 mechanism") }
            let mechanism = try HSMProfile.mechanism(name, "keyWrap.rfc5649")
            var results: [String] = []
            for family in profile.keyPairFamilies {
                let forced = try forcedUsageAttributes(family, profile: profile, mechanism: mechanism, on: token)
                let claimed = try profile.forcedTrueOnUnwrap(family)
                guard Set(forced) == Set(claimed) else {
                    throw HSMSetupError(
                        "asked for false, the token set \(forced.isEmpty ? "none" : forced.map(\.name).joined(separator: ", ")) true on an unwrapped \(family.rawValue) key: update privateKeyUnwrap.forcedTrue")
                }
                results.append("\(family.rawValue): \(forced.isEmpty ? "none" : forced.map(\.name).joined(separator: ", "))")
            }
            return results.joined(separator: "; ") + (results.isEmpty ? "no key pairs" : "; Trent's key usages decide what a key does")
        }
        return checks
    }

    /// The usage attributes a token may turn on against the template.
    private static let usageAttributes: [AttributeType] = [.decrypt, .sign, .signRecover, .unwrap, .derive]

    private static let wrappingKeyTemplate: [Attribute] = [
        .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32), Attribute(.token, false),
        Attribute(.wrap, true), Attribute(.unwrap, true),
    ]

    private static func generateECPair(
        _ curve: AsymmetricEncoding.Curve, privateTemplate: [Attribute], in session: borrowing Session
    ) throws(PKCS11Error) -> (publicKey: ObjectHandle, privateKey: ObjectHandle) {
        try session.generateKeyPair(
            .ecKeyPairGen,
            publicTemplate: [.objectClass(.publicKey), .keyType(.ec), Attribute(.token, false), Attribute(.verify, true), Attribute(.ecParams, bytes: curve.parameters)],
            privateTemplate: [.objectClass(.privateKey), .keyType(.ec), Attribute(.token, false), Attribute(.sensitive, true), Attribute(.extractable, true)]
                + privateTemplate)
    }

    private static func generateRSAPair(in session: borrowing Session, privateTemplate: [Attribute]) throws(PKCS11Error) -> (publicKey: ObjectHandle, privateKey: ObjectHandle) {
        try session.generateKeyPair(
            .rsaKeyPairGen,
            publicTemplate: [
                .objectClass(.publicKey), .keyType(.rsa), Attribute(.token, false), Attribute(.verify, true), Attribute(.encrypt, true),
                Attribute(.modulusBits, ulong: 2048), Attribute(.publicExponent, bytes: [1, 0, 1]),
            ],
            privateTemplate: [.objectClass(.privateKey), .keyType(.rsa), Attribute(.token, false), Attribute(.sensitive, true), Attribute(.extractable, true)]
                + privateTemplate)
    }

    /// The point of an EC public key object, uncompressed.
    private static func point(of publicKey: ObjectHandle, _ curve: AsymmetricEncoding.Curve, in session: borrowing Session) throws(PKCS11Error) -> [UInt8] {
        let value = try session.attribute(.ecPoint, of: publicKey).value
        guard let point = try? AsymmetricEncoding.point(fromECPointAttribute: value, curve: curve) else {
            throw PKCS11Error(.functionFailed, in: .getAttributeValue, detail: "CKA_EC_POINT is not an uncompressed \(curve.name) point")
        }
        return point
    }

    /// Generates a private key of `family` as Trent does, wraps it under a session AES key and unwraps it with the
    /// template Trent's key provider uses (with the profile's extra attribute for EC); the unwrapped copy must be
    /// sensitive and non-extractable and do what the original does: sign (checked by the original public key), and
    /// for EC derive the same ECDH secret. EC runs on every NIST curve the profile lists. Returns what it saw.
    private static func privateKeyRoundTrip(_ family: HSMProfile.KeyPairFamily, profile: HSMProfile, mechanism: MechanismType, on token: Token) throws -> String {
        let digest = AsymmetricEncoding.hash(Array("trent token probe".utf8), .sha256)
        if family == .rsa {
            try token.withSession { session throws(PKCS11Error) in try rsaRoundTrip(profile: profile, mechanism: mechanism, digest: digest, in: session) }
            return "RSA-2048 unwrapped sensitive and non-extractable, signs, the original public key verifies"
        }
        var curves: [String] = []
        for spec in [KeyPairSpec.eccNistP256, .eccNistP384, .eccNistP521] where profile.generatesCurve(of: spec) {
            let curve = AsymmetricEncoding.curve(of: spec)!
            try token.withSession { session throws(PKCS11Error) in
                try ecRoundTrip(spec, curve, profile: profile, mechanism: mechanism, digest: digest, in: session)
            }
            curves.append(curve.name)
        }
        var seen = "\(curves.joined(separator: ", ")) unwrapped sensitive and non-extractable, sign, the original public keys verify, ECDH gives the original's secret"
        // An attribute the profile adds must be needed: without it the token should refuse the unwrap.
        if let extra = profile.privateKeyUnwrap?.ecTemplateAttribute {
            let refusal = try token.withSession { session throws(PKCS11Error) in try unwrapRefusalWithoutExtra(profile: profile, mechanism: mechanism, in: session) }
            seen += refusal.map { "; without \(extra.type): \($0)" } ?? "; the token unwraps without \(extra.type) too (the profile need not name it)"
        }
        return seen
    }

    private static let protectedUnwrapDetail = "the unwrapped key is not sensitive and non-extractable"

    private static func isProtected(_ key: ObjectHandle, in session: borrowing Session) throws(PKCS11Error) -> Bool {
        let sensitive = try session.attribute(.sensitive, of: key).boolValue
        let extractable = try session.attribute(.extractable, of: key).boolValue
        return sensitive == true && extractable == false
    }

    private static func withoutBasics(_ template: [Attribute]) -> [Attribute] {
        template.filter { ![.objectClass, .keyType, .token, .sensitive, .extractable].contains($0.type) }
    }

    private static func rsaRoundTrip(profile: HSMProfile, mechanism: MechanismType, digest: [UInt8], in session: borrowing Session) throws(PKCS11Error) {
        let wrapping = try session.generateKey(.aesKeyGen, template: wrappingKeyTemplate)
        defer { try? session.destroyObject(wrapping) }
        let pair = try generateRSAPair(in: session, privateTemplate: withoutBasics(PKCS11KeyProvider.privateKeyTemplate(.rsa2048, profile: profile, extractable: true)))
        defer { for object in [pair.publicKey, pair.privateKey] { try? session.destroyObject(object) } }
        let wrapped = try session.wrapKey(pair.privateKey, with: wrapping, mechanism: .keyWrap(mechanism))
        let unwrapped = try session.unwrapKey(
            wrapped, with: wrapping, mechanism: .keyWrap(mechanism), template: PKCS11KeyProvider.privateKeyTemplate(.rsa2048, profile: profile, extractable: false))
        defer { try? session.destroyObject(unwrapped) }
        guard try isProtected(unwrapped, in: session) else { throw PKCS11Error(.functionFailed, in: .unwrapKey, detail: protectedUnwrapDetail) }
        let info = AsymmetricEncoding.digestInfo(digest, .sha256)
        let signature = try session.sign(info, key: unwrapped, mechanism: .rsaPKCS)
        try session.verify(info, signature: signature, key: pair.publicKey, mechanism: .rsaPKCS)
    }

    private static func ecRoundTrip(
        _ spec: KeyPairSpec, _ curve: AsymmetricEncoding.Curve, profile: HSMProfile, mechanism: MechanismType, digest: [UInt8],
        in session: borrowing Session
    ) throws(PKCS11Error) {
        let wrapping = try session.generateKey(.aesKeyGen, template: wrappingKeyTemplate)
        defer { try? session.destroyObject(wrapping) }
        let pair = try generateECPair(curve, privateTemplate: withoutBasics(PKCS11KeyProvider.privateKeyTemplate(spec, profile: profile, extractable: true)), in: session)
        defer { for object in [pair.publicKey, pair.privateKey] { try? session.destroyObject(object) } }
        let publicPoint = try point(of: pair.publicKey, curve, in: session)
        let wrapped = try session.wrapKey(pair.privateKey, with: wrapping, mechanism: .keyWrap(mechanism))
        // The profile's attribute type was checked when it was loaded.
        let extra = (try? profile.ecUnwrapAttribute(publicPoint: publicPoint)) ?? nil
        let template = PKCS11KeyProvider.privateKeyTemplate(spec, profile: profile, extractable: false) + [extra].compactMap { $0 }
        let unwrapped = try session.unwrapKey(wrapped, with: wrapping, mechanism: .keyWrap(mechanism), template: template)
        defer { try? session.destroyObject(unwrapped) }
        guard try isProtected(unwrapped, in: session) else { throw PKCS11Error(.functionFailed, in: .unwrapKey, detail: protectedUnwrapDetail) }
        let signature = try session.sign(digest, key: unwrapped, mechanism: .ecdsa)
        try session.verify(digest, signature: signature, key: pair.publicKey, mechanism: .ecdsa)
        let peer = try generateECPair(curve, privateTemplate: [Attribute(.derive, true)], in: session)
        defer { for object in [peer.publicKey, peer.privateKey] { try? session.destroyObject(object) } }
        let peerPoint = try point(of: peer.publicKey, curve, in: session)
        guard try ecdhSecret(unwrapped, peerPoint, in: session) == ecdhSecret(peer.privateKey, publicPoint, in: session) else {
            throw PKCS11Error(.functionFailed, in: .deriveKey, detail: "the unwrapped \(curve.name) key derives another ECDH secret")
        }
    }

    private static func ecdhSecret(_ key: ObjectHandle, _ peerPoint: [UInt8], in session: borrowing Session) throws(PKCS11Error) -> [UInt8] {
        let derived = try session.deriveKey(key, mechanism: .ecdh(peerPoint: peerPoint), template: [
            .objectClass(.secretKey), .keyType(.genericSecret), Attribute(.token, false), Attribute(.sensitive, false), Attribute(.extractable, true),
        ])
        defer { try? session.destroyObject(derived) }
        return try session.attribute(.value, of: derived).value
    }

    /// What the token answers for a P-256 unwrap with Trent's template but without the profile's extra attribute;
    /// nil when it unwraps anyway.
    private static func unwrapRefusalWithoutExtra(profile: HSMProfile, mechanism: MechanismType, in session: borrowing Session) throws(PKCS11Error) -> PKCS11Error.ReturnValue? {
        let wrapping = try session.generateKey(.aesKeyGen, template: wrappingKeyTemplate)
        defer { try? session.destroyObject(wrapping) }
        let pair = try generateECPair(AsymmetricEncoding.p256, privateTemplate: [Attribute(.sign, true)], in: session)
        defer { for object in [pair.publicKey, pair.privateKey] { try? session.destroyObject(object) } }
        let wrapped = try session.wrapKey(pair.privateKey, with: wrapping, mechanism: .keyWrap(mechanism))
        do throws(PKCS11Error) {
            let unwrapped = try session.unwrapKey(
                wrapped, with: wrapping, mechanism: .keyWrap(mechanism),
                template: PKCS11KeyProvider.privateKeyTemplate(.eccNistP256, profile: profile, extractable: false))
            try? session.destroyObject(unwrapped)
            return nil
        } catch where error.function == .unwrapKey {
            return error.returnValue
        }
    }

    /// Unwraps a private key of `family` with every usage attribute false and returns those the token set true.
    private static func forcedUsageAttributes(
        _ family: HSMProfile.KeyPairFamily, profile: HSMProfile, mechanism: MechanismType, on token: Token
    ) throws -> [AttributeType] {
        try token.withSession { session throws(PKCS11Error) -> [AttributeType] in
            let wrapping = try session.generateKey(.aesKeyGen, template: wrappingKeyTemplate)
            defer { try? session.destroyObject(wrapping) }
            let pair = family == .rsa
                ? try generateRSAPair(in: session, privateTemplate: [Attribute(.sign, true)])
                : try generateECPair(AsymmetricEncoding.p256, privateTemplate: [Attribute(.sign, true)], in: session)
            defer { for object in [pair.publicKey, pair.privateKey] { try? session.destroyObject(object) } }
            var template: [Attribute] = [
                .objectClass(.privateKey), .keyType(family == .rsa ? .rsa : .ec), Attribute(.token, false), Attribute(.sensitive, true),
                Attribute(.extractable, false),
            ] + usageAttributes.map { Attribute($0, false) }
            if family == .ec {
                let point = try Self.point(of: pair.publicKey, AsymmetricEncoding.p256, in: session)
                if let extra = (try? profile.ecUnwrapAttribute(publicPoint: point)) ?? nil { template.append(extra) }
            }
            let wrapped = try session.wrapKey(pair.privateKey, with: wrapping, mechanism: .keyWrap(mechanism))
            let unwrapped = try session.unwrapKey(wrapped, with: wrapping, mechanism: .keyWrap(mechanism), template: template)
            defer { try? session.destroyObject(unwrapped) }
            var forced: [AttributeType] = []
            for type in usageAttributes {
                if try session.attribute(type, of: unwrapped).boolValue == true { forced.append(type) }
            }
            return forced
        }
    }
}

extension Result {
    fileprivate var failureDescription: String? {
        if case .failure(let error) = self { return "\(error)" }
        return nil
    }
}
