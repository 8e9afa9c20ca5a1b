public import PKCS11

/// The domain key: the one long-lived key Trent keeps in the token. Every backing key leaves the token only
/// wrapped under it, so the token's object limit never caps the number of KMS keys, and several Trent nodes
/// need only this one key in common.
public enum DomainKey {
    /// The attributes of a domain key: sensitive, never extractable, unmodifiable, and usable only to wrap
    /// and unwrap with the given mechanisms (no encrypt, decrypt or derive, so it is no oracle).
    static func template(label: String, id: [UInt8], wrapMechanisms: [MechanismType]) -> [Attribute] {
        [
            .objectClass(.secretKey), .keyType(.aes), Attribute(.valueLength, ulong: 32),
            Attribute(.token, true), Attribute(.private, true), Attribute(.sensitive, true),
            Attribute(.extractable, false), Attribute(.modifiable, false),
            Attribute(.wrap, true), Attribute(.unwrap, true),
            Attribute(.encrypt, false), Attribute(.decrypt, false), Attribute(.sign, false), Attribute(.verify, false),
            Attribute(.derive, false),
            Attribute(.label, string: label), Attribute(.id, bytes: id),
            .allowedMechanisms(wrapMechanisms),
        ]
    }

    static func searchTemplate(label: String) -> [Attribute] {
        [.objectClass(.secretKey), Attribute(.token, true), Attribute(.label, string: label)]
    }

    /// Finds the domain key by label. More than one key with the label is refused: `CKA_ID` and labels are
    /// not unique in PKCS#11, and using the wrong one would make every EKT unreadable.
    public static func find(in token: Token, label: String) throws -> ObjectHandle? {
        let found = try token.withSession { session throws(PKCS11Error) in
            try session.findObjects(matching: searchTemplate(label: label), limit: 2)
        }
        guard found.count <= 1 else {
            throw HSMSetupError("the token holds more than one key labelled '\(label)'; remove the extra one")
        }
        return found.first
    }

    /// Creates the domain key unless it exists. Returns whether it was created.
    @discardableResult
    public static func ensure(in token: Token, label: String, wrapMechanism: MechanismType = .aesKeyWrap) throws -> Bool {
        if try find(in: token, label: label) != nil { return false }
        return try token.withSession { session throws(PKCS11Error) -> Bool in
            let id = try session.generateRandom(count: 16)
            _ = try session.generateKey(.aesKeyGen, template: template(label: label, id: id, wrapMechanisms: [wrapMechanism]))
            return true
        }
    }
}

/// A setup problem an operator must fix, worded as one line saying what to do.
public struct HSMSetupError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
