/// Writes one JSON object in ``JSONValue/canonicalBytes`` form member by member, for objects whose member names
/// are known in advance (the CloudTrail record of every request, and its line in the trail): the same bytes as
/// building the object as a ``JSONValue`` and serialising it, without the dictionary and the sort.
///
/// Members must be written in ascending order of their names' UTF-8 bytes, each name once (debug builds check it).
public struct CanonicalObjectWriter {
    private var output: [UInt8] = [UInt8(ascii: "{")]
    private var previousName: String?
    private var representable = true

    public init(capacity: Int = 1024) { output.reserveCapacity(capacity) }

    /// Adds a member; a nil value leaves it out.
    public mutating func member(_ name: String, _ value: JSONValue?) {
        guard let value else { return }
        startMember(name)
        if !JSONValue.write(value, into: &output) { representable = false }
    }

    public mutating func member(_ name: String, string: String?) { member(name, string.map(JSONValue.string)) }

    /// Adds a member whose value is already in canonical form (an audit record inside its line), copied as is.
    public mutating func member(_ name: String, canonicalBytes value: [UInt8]) {
        startMember(name)
        output += value
    }

    private mutating func startMember(_ name: String) {
        assert(previousName.map { $0.utf8.lexicographicallyPrecedes(name.utf8) } ?? true, "members out of order: \(name)")
        if previousName != nil { output.append(UInt8(ascii: ",")) }
        previousName = name
        JSONValue.writeString(name, into: &output)
        output.append(UInt8(ascii: ":"))
    }

    /// The object's bytes; `null`, as ``JSONValue/canonicalBytes`` gives, when a number in it is not finite.
    public var bytes: [UInt8] {
        guard representable else { return Array("null".utf8) }
        return output + [UInt8(ascii: "}")]
    }
}
