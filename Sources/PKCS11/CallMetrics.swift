import CoreMetrics
import Synchronization

/// Metrics of every Cryptoki call made through ``call(_:fileID:line:_:)``, so every token (Trent's own and the
/// custom key stores') is covered: calls and their latency by function, failures by function and `CKR_*` name.
///
/// The objects are made once, on first use (after `trent serve` bootstrapped the metrics system), so a call costs
/// a read of an immutable table and two updates, never a registry lookup. Only function names and return codes
/// are labels: nothing a call carries (keys, data, PINs) is measured.
enum CallMetrics {
    struct PerFunction: Sendable {
        let duration: Timer
        let calls: Counter
    }

    private static let functions: [String: PerFunction] = {
        var table: [String: PerFunction] = [:]
        for function in PKCS11Error.Function.all where table[function.rawValue] == nil {
            table[function.rawValue] = make(function.rawValue)
        }
        return table
    }()
    private static let other = make("other")
    private static let errors = Mutex<[ErrorLabel: Counter]>([:])

    private struct ErrorLabel: Hashable {
        var function: String
        var code: String
    }

    private static func make(_ function: String) -> PerFunction {
        PerFunction(
            duration: Timer(label: "trent_pkcs11_call_duration_seconds", dimensions: [("function", function)]),
            calls: Counter(label: "trent_pkcs11_calls_total", dimensions: [("function", function)]))
    }

    static func of(_ function: PKCS11Error.Function) -> PerFunction { functions[function.rawValue] ?? other }

    /// Failures are rare: their counters are made on first use, under a lock.
    static func countError(_ returnValue: PKCS11Error.ReturnValue, in function: PKCS11Error.Function) {
        let label = ErrorLabel(function: functions[function.rawValue] == nil ? "other" : function.rawValue, code: returnValue.name)
        let counter = errors.withLock { errors in
            if let counter = errors[label] { return counter }
            let counter = Counter(label: "trent_pkcs11_errors_total", dimensions: [("function", label.function), ("code", label.code)])
            errors[label] = counter
            return counter
        }
        counter.increment()
    }
}

extension ContinuousClock.Instant {
    /// Nanoseconds from this instant to now, for a metrics timer: what swift-metrics' `Timer.record(duration:)` does
    /// elsewhere in Trent, which this target does without so that the C boundary depends on CoreMetrics alone.
    var nanosecondsElapsed: Int64 {
        let (seconds, attoseconds) = (ContinuousClock.now - self).components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).partialValue &+ attoseconds / 1_000_000_000
    }
}
