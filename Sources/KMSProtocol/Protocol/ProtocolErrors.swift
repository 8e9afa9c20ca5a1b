public import KMS

/// The errors of the AWS JSON 1.1 protocol and of SigV4, which every AWS service shares; the KMS exceptions
/// of the API itself are ``KMSError/Code``'s own.
extension KMSError.Code {
    public static let missingAuthenticationToken = KMSError.Code(rawValue: "MissingAuthenticationTokenException")
    public static let unrecognizedClient = KMSError.Code(rawValue: "UnrecognizedClientException")
    public static let invalidSignature = KMSError.Code(rawValue: "InvalidSignatureException")
    public static let incompleteSignature = KMSError.Code(rawValue: "IncompleteSignatureException")
    public static let serialization = KMSError.Code(rawValue: "SerializationException")
    public static let unknownOperation = KMSError.Code(rawValue: "UnknownOperationException")
}
