import Foundation
import KMS

/// One fuzz target: a parser of untrusted bytes and the properties it must keep for every input.
struct FuzzTarget: Sendable {
    var name: String
    /// libFuzzer's `-max_len` for the target: the largest input worth mutating (`make fuzz` reads it from `--list`).
    var maximumLength: Int
    var summary: String
    var run: @Sendable ([UInt8]) -> Void
}

/// A property every input must keep: the fuzzer reports its failure as a crash, with the message.
func check(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    guard !condition else { return }
    fatalError("fuzz property violated: \(message())", file: file, line: line)
}

/// Errors of request handling must be KMSErrors: anything else becomes a 500 (and an "unexpected failure" log
/// line) for what is the client's mistake.
func checkKMSError(_ error: any Error, _ what: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
    check(error is KMSError, "\(what()) threw \(type(of: error)), not a KMSError: \(error)", file: file, line: line)
}

/// Runs async code to completion from the fuzzer's synchronous callback (the calling thread waits).
///
/// One long-lived task runs every job, rather than a task per input: a task's memory is freed after it signals,
/// so with a task per input the fuzzer's malloc/free count never balances and LeakSanitizer scans the whole heap
/// after every input (a hundred times slower). Here a job and its closure are released before the caller resumes.
func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    AsyncWorker.shared.submit(AsyncWorker.Job(body: { box.value = await body() }, done: done))
    done.wait()
    return box.value!
}

private final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}

private final class AsyncWorker: @unchecked Sendable {
    struct Job: Sendable {
        var body: @Sendable () async -> Void
        var done: DispatchSemaphore
    }

    static let shared = AsyncWorker()
    /// The one job waiting or running (the fuzzer runs one input at a time), handed over under `submitted`.
    private var pending: Job?
    private let submitted = DispatchSemaphore(value: 0)

    private init() {
        // The worker blocks its thread between jobs: one thread of the pool, for the life of the fuzzer process,
        // and no allocation between one job and the next.
        Task.detached { [self] in
            while true {
                submitted.wait()
                var job = pending
                pending = nil
                let done = job!.done
                await job!.body()
                job = nil
                done.signal()
            }
        }
    }

    func submit(_ job: Job) {
        pending = job
        submitted.signal()
    }
}

/// Reads structured values out of the fuzzer's bytes, front to back; past the end everything is zero or empty.
/// Mutations of one field then mostly leave the others alone.
struct FuzzReader {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { index >= bytes.count }
    var remaining: [UInt8] { index < bytes.count ? Array(bytes[index...]) : [] }

    mutating func byte() -> UInt8 {
        guard index < bytes.count else { return 0 }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func bool() -> Bool { byte() & 1 == 1 }

    /// Bytes up to (not including) `separator`, which is consumed; the rest when there is none.
    mutating func field(separator: UInt8) -> [UInt8] {
        guard index < bytes.count else { return [] }
        let end = bytes[index...].firstIndex(of: separator) ?? bytes.count
        defer { index = min(end + 1, bytes.count) }
        return Array(bytes[index..<end])
    }

    mutating func string(separator: UInt8) -> String { String(decoding: field(separator: separator), as: UTF8.self) }
}

extension Array where Element == UInt8 {
    /// Splits at every `separator` (empty pieces kept).
    func pieces(separator: UInt8) -> [[UInt8]] { split(separator: separator, omittingEmptySubsequences: false).map(Array.init) }
}

/// Pairs `key=value` split at `pairSeparator`, key from value at the first `=` (no `=`: an empty value).
func stringPairs(_ bytes: [UInt8], pairSeparator: UInt8) -> [String: String] {
    var pairs: [String: String] = [:]
    for piece in bytes.pieces(separator: pairSeparator) where !piece.isEmpty {
        let equals = piece.firstIndex(of: UInt8(ascii: "=")) ?? piece.count
        let key = String(decoding: piece[..<equals], as: UTF8.self)
        let value = equals < piece.count ? String(decoding: piece[(equals + 1)...], as: UTF8.self) : ""
        pairs[key] = value
    }
    return pairs
}
