/// A failure with KMS meaning. `code` is the AWS exception name a client sees in `__type`; `message` is
/// what it reads. A message never holds plaintext, key material, a PIN or a secret.
///
/// Every lower-level error (PKCS#11, SQLite) is translated into one of these exactly once, at the boundary
/// of the provider or store that raised it; the cause is kept for the log only.
public struct KMSError: Error, Sendable, CustomStringConvertible {
    public var code: Code
    public var message: String
    /// The lower-level error, for operators' logs. Never serialised to a client.
    public var cause: (any Error & Sendable)?
    /// For a retryable failure that will last a while (the HSM is unavailable): how long a client should wait before
    /// retrying, sent as `x-amz-retry-after` (milliseconds), which the AWS SDKs' standard retries honour.
    public var retryAfterMilliseconds: Int?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        var text = "\(code.rawValue): \(message)"
        if let cause { text += " (cause: \(cause))" }
        return text
    }

    /// An AWS KMS exception name, exactly as the botocore model spells it.
    public struct Code: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        public static let alreadyExists = Code(rawValue: "AlreadyExistsException")
        public static let dependencyTimeout = Code(rawValue: "DependencyTimeoutException")
        public static let disabled = Code(rawValue: "DisabledException")
        public static let dryRun = Code(rawValue: "DryRunOperationException")
        public static let incorrectKey = Code(rawValue: "IncorrectKeyException")
        public static let internalFailure = Code(rawValue: "KMSInternalException")
        public static let invalidAliasName = Code(rawValue: "InvalidAliasNameException")
        public static let invalidArn = Code(rawValue: "InvalidArnException")
        public static let invalidCiphertext = Code(rawValue: "InvalidCiphertextException")
        public static let invalidGrantToken = Code(rawValue: "InvalidGrantTokenException")
        public static let invalidKeyUsage = Code(rawValue: "InvalidKeyUsageException")
        public static let invalidMarker = Code(rawValue: "InvalidMarkerException")
        public static let invalidState = Code(rawValue: "KMSInvalidStateException")
        public static let keyUnavailable = Code(rawValue: "KeyUnavailableException")
        public static let limitExceeded = Code(rawValue: "LimitExceededException")
        public static let malformedPolicyDocument = Code(rawValue: "MalformedPolicyDocumentException")
        public static let notAuthorized = Code(rawValue: "NotAuthorizedException")
        public static let notFound = Code(rawValue: "NotFoundException")
        public static let tag = Code(rawValue: "TagException")
        /// Not in the KMS model: the AWS-wide throttling error, which the SDKs' retries back off on.
        public static let throttling = Code(rawValue: "ThrottlingException")
        public static let unsupportedOperation = Code(rawValue: "UnsupportedOperationException")
        public static let validation = Code(rawValue: "ValidationException")
    }
}

extension KMSError {
    /// A ValidationException worded as AWS words bound violations, naming the wire member.
    static func constraint(_ member: String, _ constraint: String, value: String? = nil) -> KMSError {
        let subject = value.map { "Value '\($0)' at '\(member)'" } ?? "Value at '\(member)'"
        return KMSError(.validation, "1 validation error detected: \(subject) failed to satisfy constraint: \(constraint)")
    }

    static func missing(_ member: String) -> KMSError {
        KMSError(.validation, "1 validation error detected: Value null at '\(member)' failed to satisfy constraint: Member must not be null")
    }
}
