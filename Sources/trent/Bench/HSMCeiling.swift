import Foundation
import KMSHSM
import PKCS11
import Synchronization

/// The HSM ceiling: the PKCS#11 work of one Trent operation, in a tight in-process loop on the same token
/// (a session-object AES-256 / HMAC key made with the same template as Trent's working keys, a session
/// checked out of the same kind of pool per operation), with 1 and with 2 threads; the better of the two counts.
struct HSMCeiling {
    struct Figure: Codable {
        var name: String
        var description: String
        var opsPerSecondOneThread: Double
        var opsPerSecondTwoThreads: Double
        var opsPerSecond: Double { max(opsPerSecondOneThread, opsPerSecondTwoThreads) }

        enum CodingKeys: String, CodingKey { case name, description, opsPerSecondOneThread, opsPerSecondTwoThreads, opsPerSecond }
        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(name, forKey: .name)
            try container.encode(description, forKey: .description)
            try container.encode(opsPerSecondOneThread, forKey: .opsPerSecondOneThread)
            try container.encode(opsPerSecondTwoThreads, forKey: .opsPerSecondTwoThreads)
            try container.encode(opsPerSecond, forKey: .opsPerSecond)
        }
        init(name: String, description: String, opsPerSecondOneThread: Double, opsPerSecondTwoThreads: Double) {
            self.name = name
            self.description = description
            self.opsPerSecondOneThread = opsPerSecondOneThread
            self.opsPerSecondTwoThreads = opsPerSecondTwoThreads
        }
        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            name = try container.decode(String.self, forKey: .name)
            description = try container.decode(String.self, forKey: .description)
            opsPerSecondOneThread = try container.decode(Double.self, forKey: .opsPerSecondOneThread)
            opsPerSecondTwoThreads = try container.decode(Double.self, forKey: .opsPerSecondTwoThreads)
        }
    }

    let token: Token
    let seconds: Double
    /// Also measure GCM encryption over this many session keys, one chosen at random per operation (0: skip).
    var manyKeys = 0

    /// Measures every loop the benchmarked operations need.
    func measure() throws -> [String: Figure] {
        let aes = try token.withLongLivedSession { session throws(PKCS11Error) in
            try session.generateKey(.aesKeyGen, template: [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.token, false), Attribute(.private, true), Attribute(.sensitive, true),
                Attribute(.extractable, false), Attribute(.encrypt, true), Attribute(.decrypt, true), Attribute(.valueLength, ulong: 32),
            ])
        }
        let hmac = try token.withLongLivedSession { session throws(PKCS11Error) in
            try session.generateKey(.genericSecretKeyGen, template: [
                .objectClass(.secretKey), .keyType(.genericSecret), Attribute(.token, false), Attribute(.private, true),
                Attribute(.sensitive, true), Attribute(.extractable, false), Attribute(.sign, true), Attribute(.verify, true),
                Attribute(.valueLength, ulong: 32),
            ])
        }
        defer {
            try? token.withLongLivedSession { session throws(PKCS11Error) in
                try session.destroyObject(aes)
                try session.destroyObject(hmac)
            }
        }
        let aad = [UInt8](repeating: 7, count: 21)  // the blob header Trent authenticates with an empty context
        let small = [UInt8](repeating: 1, count: 32)
        let large = [UInt8](repeating: 1, count: 4096)
        let (iv, sealed) = try token.withSession { session throws(PKCS11Error) in try session.sealGCM(small, key: aes, additionalData: aad) }
        let token = self.token

        var figures: [String: Figure] = [:]
        func add(_ name: String, _ description: String, _ work: @escaping @Sendable () throws -> Void) throws {
            try work()  // fails loudly before timing
            figures[name] = Figure(
                name: name, description: description, opsPerSecondOneThread: Self.loop(threads: 1, seconds: seconds, work),
                opsPerSecondTwoThreads: Self.loop(threads: 2, seconds: seconds, work))
        }
        try add("gcm-encrypt-32", "C_EncryptInit + C_Encrypt, AES-256-GCM, 32 B + 21 B AAD, session key (+ C_GenerateRandom IV where the token wants one)") {
            _ = try token.withSession { session throws(PKCS11Error) in try session.sealGCM(small, key: aes, additionalData: aad) }
        }
        try add("gcm-encrypt-4096", "the same with 4 KiB") {
            _ = try token.withSession { session throws(PKCS11Error) in try session.sealGCM(large, key: aes, additionalData: aad) }
        }
        try add("gcm-decrypt-32", "C_DecryptInit + C_Decrypt, AES-256-GCM, 48 B + 21 B AAD") {
            _ = try token.withSession { session throws(PKCS11Error) in
                try session.decrypt(sealed, key: aes, mechanism: .aesGCM(iv: iv, additionalData: aad))
            }
        }
        try add("random-32+gcm-encrypt-32", "C_GenerateRandom(32) then GCM encrypt of it (GenerateDataKey)") {
            _ = try token.withSession { session throws(PKCS11Error) in
                try session.sealGCM(try session.generateRandom(count: 32), key: aes, additionalData: aad)
            }
        }
        try add("gcm-decrypt+encrypt-32", "GCM decrypt then GCM encrypt (ReEncrypt)") {
            _ = try token.withSession { session throws(PKCS11Error) in
                let plaintext = try session.decrypt(sealed, key: aes, mechanism: .aesGCM(iv: iv, additionalData: aad))
                return try session.sealGCM(plaintext, key: aes, additionalData: aad)
            }
        }
        try add("hmac-sha256-32", "C_SignInit + C_Sign, CKM_SHA256_HMAC, 32 B (GenerateMac)") {
            _ = try token.withSession { session throws(PKCS11Error) in try session.sign(small, key: hmac, mechanism: .hmac(.sha256HMAC)) }
        }
        if manyKeys > 1 {
            let template: [Attribute] = [
                .objectClass(.secretKey), .keyType(.aes), Attribute(.token, false), Attribute(.private, true), Attribute(.sensitive, true),
                Attribute(.extractable, false), Attribute(.encrypt, true), Attribute(.decrypt, true), Attribute(.valueLength, ulong: 32),
            ]
            let keys = try token.withLongLivedSession { session throws(PKCS11Error) -> [ObjectHandle] in
                var keys: [ObjectHandle] = []
                keys.reserveCapacity(manyKeys)
                for _ in 0..<manyKeys { keys.append(try session.generateKey(.aesKeyGen, template: template)) }
                return keys
            }
            defer {
                try? token.withLongLivedSession { session throws(PKCS11Error) in
                    for key in keys { try? session.destroyObject(key) }
                }
            }
            try add("gcm-encrypt-32-\(manyKeys)-keys", "gcm-encrypt-32 with \(manyKeys) session keys in the token, one chosen at random per operation") {
                let key = keys[Int.random(in: 0..<keys.count)]
                _ = try token.withSession { session throws(PKCS11Error) in try session.sealGCM(small, key: key, additionalData: aad) }
            }
        }
        return figures
    }

    /// Runs `work` on `threads` threads for `seconds`; returns operations per second.
    static func loop(threads: Int, seconds: Double, _ work: @escaping @Sendable () throws -> Void) -> Double {
        let counts = Mutex([Int](repeating: 0, count: threads))
        let start = Date()
        let deadline = start.addingTimeInterval(seconds)
        let group = DispatchGroup()
        for index in 0..<threads {
            group.enter()
            let thread = Thread {
                var done = 0
                while done % 256 != 0 || Date() < deadline {
                    if (try? work()) == nil { break }
                    done += 1
                }
                counts.withLock { $0[index] = done }
                group.leave()
            }
            thread.start()
        }
        group.wait()
        let elapsed = Date().timeIntervalSince(start)
        return Double(counts.withLock { $0.reduce(0, +) }) / elapsed
    }
}
