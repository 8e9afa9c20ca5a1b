internal import CPKCS11
import CoreMetrics

/// The table of Cryptoki entry points of one loaded module.
///
/// `@unchecked Sendable` because the table is immutable after `C_GetFunctionList`, and the module is always
/// initialised with `CKF_OS_LOCKING_OK`, which makes calls from several threads safe as long as no session
/// is used by two threads at once (the session pool guarantees that).
final class FunctionList: @unchecked Sendable {
    let table: UnsafeMutablePointer<CK_FUNCTION_LIST>
    let library: UnsafeMutableRawPointer

    init(table: UnsafeMutablePointer<CK_FUNCTION_LIST>, library: UnsafeMutableRawPointer) {
        self.table = table
        self.library = library
    }

    var list: CK_FUNCTION_LIST { table.pointee }
}

/// The one place that reads a `CK_RV`: runs a Cryptoki call and turns anything but `CKR_OK` into a
/// ``PKCS11Error`` naming the function, and counts it (``CallMetrics``). `body` returns `nil` when the module lacks the entry point.
@inline(__always)
func call(
    _ function: PKCS11Error.Function, fileID: String = #fileID, line: Int = #line, _ body: () -> CK_RV?
) throws(PKCS11Error) {
    let metrics = CallMetrics.of(function)
    let start = ContinuousClock.now
    let returned = body()
    metrics.duration.recordNanoseconds(start.nanosecondsElapsed)
    metrics.calls.increment()
    guard let rv = returned else {
        CallMetrics.countError(.functionNotSupported, in: function)
        throw PKCS11Error(.functionNotSupported, in: function, detail: "the module has no entry point for it", fileID: fileID, line: line)
    }
    guard rv == CK_RV(CKR_OK) else {
        let returnValue = PKCS11Error.ReturnValue(rawValue: UInt(rv))
        CallMetrics.countError(returnValue, in: function)
        throw PKCS11Error(returnValue, in: function, fileID: fileID, line: line)
    }
}

/// Decodes a blank-padded fixed-size Cryptoki string (a C array imported as a tuple).
func paddedString<T>(_ tuple: T) -> String {
    withUnsafeBytes(of: tuple) { raw in
        String(decoding: raw, as: UTF8.self).trimmingTrailing(" ")
    }
}

/// Encodes `text` as a blank-padded Cryptoki string of exactly `count` bytes.
func padded(_ text: String, to count: Int) -> [UInt8] {
    var bytes = Array(text.utf8.prefix(count))
    bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: count - bytes.count))
    return bytes
}

extension String {
    fileprivate func trimmingTrailing(_ character: Character) -> String {
        var end = endIndex
        while end > startIndex, self[index(before: end)] == character || self[index(before: end)] == "\0" {
            end = index(before: end)
        }
        return String(self[..<end])
    }
}
