#if canImport(Glibc)
import Glibc
#endif
import PKCS11
import Synchronization

/// A pthread read-write lock that prefers writers: under steady load a writer (a token recovery) must not wait
/// for ever behind a stream of readers (requests). Not recursive: a reader must never take it again.
final class ReadWriteLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        // PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP: glibc's default prefers readers.
        pthread_rwlockattr_setkind_np(&attributes, 2)
        pthread_rwlock_init(lock, &attributes)
        pthread_rwlockattr_destroy(&attributes)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func withReadLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func withWriteLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}

/// What every token Trent opens on one PKCS#11 module shares: the module, and the gate that keeps calls out while
/// the module is finalised and initialised again (a call inside a finalised module is undefined behaviour).
///
/// Modules are loaded once per path for the life of the process: a custom key store on the same module as
/// Trent's own token shares it, so that a reset by one is seen by the other (its ``generation`` moves on, and
/// every handle found before is dropped).
final class SharedModule: Sendable {
    let module: PKCS11Module
    /// Every PKCS#11 task holds it for reading; a login or a module reset for writing.
    let gate = ReadWriteLock()
    private let resets = Atomic<Int>(0)

    private init(module: PKCS11Module) { self.module = module }

    /// How many times the module was re-initialised: handles from an earlier generation are dead, and their
    /// numbers may have been given to other objects since.
    var generation: Int { resets.load(ordering: .sequentiallyConsistent) }

    /// `C_Finalize` + `C_Initialize`. Call with the gate held for writing.
    func reinitialize() throws(PKCS11Error) {
        resets.add(1, ordering: .sequentiallyConsistent)
        try module.reinitialize()
    }

    private static let loaded = Mutex<[String: SharedModule]>([:])

    /// The module loaded from `path`, loading and initialising it on first use.
    static func open(path: String, initString: String?) throws(PKCS11Error) -> SharedModule {
        if let module = loaded.withLock({ $0[path] }) { return module }
        let module = try PKCS11Module(path: path, initString: initString)
        return adopt(module)
    }

    /// Registers a module loaded elsewhere (the bootstrap's), or returns the one already registered for its path.
    static func adopt(_ module: PKCS11Module) -> SharedModule {
        loaded.withLock { loaded in
            if let existing = loaded[module.path] { return existing }
            let shared = SharedModule(module: module)
            loaded[module.path] = shared
            return shared
        }
    }
}
