import Foundation
@testable import KMS

/// The encryption context (its canonical encoding, the AAD of every symmetric ciphertext, and its bounds),
/// grant constraints (matching and the "no wider than its parent" rule of grants made through grants) and
/// grant tokens.
///
/// Input: a flag byte, then four contexts separated by 0x1E, each `key=value` pairs separated by 0x1F, then a
/// grant token. The flags pick which contexts are the parent's EncryptionContextEquals and Subset (contexts 1
/// and 2) and the child's (3 and 4); the top four bits all set make context 1 oversized.
///
/// Properties: no trap; a context that validates encodes (canonicalBytes does not throw), decodes back to the
/// same pairs, and two contexts encode alike only if they are equal; an oversized one is refused, never encoded
/// ambiguously; constraints made from the contexts allow what they say; a child grant's constraints judged at
/// least as strict as its parent's allow no context the parent refuses; a grant token that reads names a
/// 64-hex-digit grant id, and a token Trent writes reads back as its grant id.
enum EncryptionContextTarget {
    static let target = FuzzTarget(name: "encryption-context", maximumLength: 2048, summary: "EncryptionContext encoding and bounds, grant constraints, grant tokens") { bytes in
        run(bytes)
    }

    static func run(_ bytes: [UInt8]) {
        var reader = FuzzReader(bytes)
        let flags = reader.byte()
        var contexts = (0..<4).map { _ in stringPairs(reader.field(separator: 0x1E), pairSeparator: 0x1F) }
        // Now and then a context past the u16 lengths of the encoding, which must be refused.
        if flags & 0xF0 == 0xF0, let key = contexts[0].keys.first {
            contexts[0][key] = String(repeating: "v", count: 65_536 + Int(flags & 0x0F))
        }
        let tokenText = String(decoding: reader.remaining, as: UTF8.self)

        var encodings: [[UInt8]?] = []
        for pairs in contexts {
            let context = EncryptionContext(pairs)
            let encoded = try? context.canonicalBytes()
            encodings.append(encoded)
            if (try? context.validate(member: "encryptionContext")) != nil {
                check(encoded != nil, "a context that validates does not encode")
                check(!pairs.keys.contains(""), "an empty key passed validation")
                check(pairs.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count } <= EncryptionContext.maximumSize, "an oversized context passed validation")
            }
            if let encoded {
                check(decode(encoded) == pairs, "the canonical encoding does not decode back to the context")
                check(pairs.isEmpty == encoded.isEmpty, "only the empty context encodes as no bytes")
            } else {
                check(pairs.count > 0xFFFF || pairs.contains { $0.key.utf8.count > 0xFFFF || $0.value.utf8.count > 0xFFFF }, "a context that fits u16 lengths did not encode")
            }
        }
        for i in 0..<contexts.count {
            for j in 0..<contexts.count where i < j {
                if let a = encodings[i], let b = encodings[j], a == b {
                    check(contexts[i] == contexts[j], "two different contexts encode alike")
                }
            }
        }
        checkConstraints(flags, contexts)
        checkGrantToken(tokenText)
    }

    /// The encoding read back: `u16 count`, then `u16 keylen | key | u16 vallen | value` per pair.
    static func decode(_ bytes: [UInt8]) -> [String: String]? {
        guard !bytes.isEmpty else { return [:] }
        var index = 0
        func u16() -> Int? {
            guard index + 2 <= bytes.count else { return nil }
            defer { index += 2 }
            return Int(bytes[index]) << 8 | Int(bytes[index + 1])
        }
        func text() -> String? {
            guard let length = u16(), index + length <= bytes.count else { return nil }
            defer { index += length }
            return String(validating: bytes[index..<(index + length)], as: UTF8.self)
        }
        guard let count = u16() else { return nil }
        var pairs: [String: String] = [:]
        var previousKey: [UInt8]?
        for _ in 0..<count {
            guard let key = text(), let value = text() else { return nil }
            // Sorted by the keys' UTF-8 bytes, each once.
            if let previousKey, !previousKey.lexicographicallyPrecedes(Array(key.utf8)) { return nil }
            previousKey = Array(key.utf8)
            pairs[key] = value
        }
        return index == bytes.count ? pairs : nil
    }

    static func checkConstraints(_ flags: UInt8, _ contexts: [[String: String]]) {
        func constraints(_ bits: UInt8, equals: [String: String], subset: [String: String]) -> GrantConstraints {
            GrantConstraints(encryptionContextEquals: bits & 1 != 0 ? equals : nil, encryptionContextSubset: bits & 2 != 0 ? subset : nil)
        }
        let parent = constraints(flags, equals: contexts[0], subset: contexts[1])
        let child = constraints(flags >> 2, equals: contexts[2], subset: contexts[3])
        var requests = contexts.map(EncryptionContext.init)
        for (a, b) in [(0, 1), (2, 3), (1, 3), (0, 2)] {
            requests.append(EncryptionContext(contexts[a].merging(contexts[b]) { first, _ in first }))
        }
        requests.append(EncryptionContext())

        for request in requests {
            let allowed = parent.allow(request)
            if let equals = parent.encryptionContextEquals, allowed { check(request.pairs == equals, "EncryptionContextEquals allowed another context") }
            if let subset = parent.encryptionContextSubset, allowed {
                check(subset.allSatisfy { request.pairs[$0.key] == $0.value }, "EncryptionContextSubset allowed a context without its pairs")
            }
            if parent.isEmpty { check(allowed, "no constraints refused a context") }
        }
        if child.isAtLeastAsStrict(as: parent) {
            for request in requests where child.allow(request) {
                // Found by this target: a parent with both kinds of constraint was judged by its Equals alone.
                check(parent.allow(request), "child \(child) is judged at least as strict as \(parent) but allows \(request.pairs), which the parent refuses")
            }
        }
        check(parent.isAtLeastAsStrict(as: GrantConstraints()), "constraints are not as strict as none")
        check(parent.isAtLeastAsStrict(as: parent), "constraints are not as strict as themselves")
    }

    static func checkGrantToken(_ token: String) {
        if let id = try? KeyManagementService.grantID(fromToken: token) {
            check(id.count == 64, "a grant token named a grant id of \(id.count) characters")
            // Found by this target: Character.isHexDigit also took fullwidth digits and letters.
            check(
                id.utf8.count == 64 && id.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) },
                "a grant token named the grant id \(id.debugDescription)")
        }
        // A token as Trent writes it names its grant.
        let id = DerivedHex.hex(of: token)
        let written = Data(("trent-grant-token-v1:" + id + ":" + DerivedHex.hex(of: id).prefix(32)).utf8).base64EncodedString()
        check((try? KeyManagementService.grantID(fromToken: written)) == id, "a token Trent writes does not read back as its grant id")
    }
}

/// 64 lowercase hex digits derived from any text (a grant id, as Trent's grant ids are).
enum DerivedHex {
    static func hex(of text: String) -> String {
        var state: UInt64 = 0xCBF2_9CE4_8422_2325
        var digits = ""
        for round in 0..<4 {
            for byte in text.utf8 { state = (state ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
            state = (state ^ UInt64(round)) &* 0x0000_0100_0000_01B3
            digits += String(repeating: "0", count: 16 - String(state, radix: 16).count) + String(state, radix: 16)
        }
        return digits
    }
}
