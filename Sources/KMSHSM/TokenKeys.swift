public import PKCS11

/// The labels of the two long-lived keys Trent keeps in a token.
public struct TokenKeyLabels: Sendable, Hashable {
    /// Wraps every backing key; never encrypts data.
    public var domainKey: String
    /// Seals Trent's own secrets (access-key secrets, audit digests) with AES-GCM.
    public var sealingKey: String

    public init(domainKey: String, sealingKey: String) {
        self.domainKey = domainKey
        self.sealingKey = sealingKey
    }
}

/// The long-lived keys in the token. Everything else (every backing key of every KMS key) leaves the token
/// only wrapped under the domain key, so the token's object limit never caps the number of KMS keys, and
/// several Trent nodes need only these two keys in common.
///
/// Both are sensitive, never extractable and unmodifiable, and each is limited to one job through
/// `CKA_ALLOWED_MECHANISMS`: the domain key only wraps and unwraps (no encrypt, decrypt or derive, so it is
/// no oracle), the sealing key only does AES-GCM.
public enum TokenKeys {
    enum Role {
        /// Wraps AES backing keys with RFC 3394 and other material (HMAC keys) with RFC 5649.
        case domain(wrapMechanisms: [MechanismType])
        case sealing
    }

    /// - Parameter restrictMechanisms: set `CKA_ALLOWED_MECHANISMS` (only where the token enforces it: NSS
    ///   softoken refuses the attribute on token keys, and where it is not enforced it would promise nothing).
    static func template(_ role: Role, label: String, id: [UInt8], restrictMechanisms: Bool) -> [Attribute] {
        let common: [Attribute] = [
            .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32),
            Attribute(.token, true), Attribute(.private, true), Attribute(.sensitive, true),
            Attribute(.extractable, false), Attribute(.modifiable, false),
            Attribute(.sign, false), Attribute(.verify, false), Attribute(.derive, false),
            Attribute(.label, string: label), Attribute(.id, bytes: id),
        ]
        switch role {
        case .domain(let wrapMechanisms):
            return common + [Attribute(.wrap, true), Attribute(.unwrap, true), Attribute(.encrypt, false), Attribute(.decrypt, false)]
                + (restrictMechanisms ? [.allowedMechanisms(wrapMechanisms)] : [])
        case .sealing:
            return common + [Attribute(.wrap, false), Attribute(.unwrap, false), Attribute(.encrypt, true), Attribute(.decrypt, true)]
                + (restrictMechanisms ? [.allowedMechanisms([.aesGCM])] : [])
        }
    }

    /// Finds a token key by label. More than one key with the label is refused: labels and `CKA_ID` are not
    /// unique in PKCS#11, and using the wrong key would make every wrapped key unreadable.
    public static func find(in token: Token, label: String) throws -> ObjectHandle? {
        let found = try token.withSession { session throws(PKCS11Error) in
            try session.findObjects(matching: [.objectClass(.secretKey), Attribute(.token, true), Attribute(.label, string: label)], limit: 2)
        }
        guard found.count <= 1 else {
            throw HSMSetupError("the token holds more than one key labelled '\(label)'; remove the extra one")
        }
        return found.first
    }

    /// Creates whichever of the two keys is missing, as the token's profile says; returns the labels it created.
    @discardableResult
    public static func ensure(in token: Token, labels: TokenKeyLabels, profile: HSMProfile) throws -> [String] {
        var created: [String] = []
        let restrict = profile.allowedMechanisms.enforced
        var wrapMechanisms = [try profile.rfc3394Mechanism()]
        if let rfc5649 = profile.keyWrap.rfc5649 { wrapMechanisms.append(try HSMProfile.mechanism(rfc5649, "keyWrap.rfc5649")) }
        for (label, role) in [(labels.domainKey, Role.domain(wrapMechanisms: wrapMechanisms)), (labels.sealingKey, .sealing)] {
            guard try find(in: token, label: label) == nil else { continue }
            try token.withSession { session throws(PKCS11Error) in
                let id = try session.generateRandom(count: 16)
                _ = try session.generateKey(.aesKeyGen, template: template(role, label: label, id: id, restrictMechanisms: restrict))
            }
            created.append(label)
        }
        return created
    }
}

/// A setup problem an operator must fix, worded as one line saying what to do.
public struct HSMSetupError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
