import PSPCCore

extension Pspc_V1_CropSpec {
    public init(_ crops: CropSet) {
        self.init()
        switch crops {
        case .square(let patchSize): kind = .squarePatchSize(UInt32(clamping: patchSize))
        case .masks(let masks): kind = .masks(Pspc_V1_MaskSetSpec(masks))
        }
    }
}

extension CropSet {
    /// Rejects an empty spec, a zero patch size and malformed masks; whether the crops fit the images is
    /// checked by the request that carries them.
    public init(wire: Pspc_V1_CropSpec, field: String = "crops") throws {
        switch wire.kind {
        case .none:
            throw WireError.invalidArgument("\(field) names neither a square patch size nor masks")
        case .squarePatchSize(let size):
            guard size >= 1 else { throw WireError.invalidArgument("\(field).square_patch_size must be at least 1") }
            self = .square(patchSize: Int(size))
        case .masks(let masks):
            self = .masks(try MaskSet(wire: masks, field: "\(field).masks"))
        }
    }
}

extension Pspc_V1_MaskSetSpec {
    public init(_ masks: MaskSet) {
        self.init()
        offsets = masks.offsets.map { Int64($0) }
        pixels = masks.pixels
        multiplicity = masks.multiplicity
        pixelCount = UInt64(clamping: masks.pixelCount)
    }
}

extension MaskSet {
    /// Checks that the rows are well formed: offsets start at 0, never decrease and end at the pixel count,
    /// one more offset than multiplicities, every pixel inside `[0, pixel_count)`, multiplicities finite and
    /// non-negative.
    public init(wire: Pspc_V1_MaskSetSpec, field: String = "masks") throws {
        let count = wire.multiplicity.count
        guard wire.offsets.count == count + 1 else {
            throw WireError.invalidArgument(
                "\(field) has \(wire.offsets.count) offsets for \(count) masks; expected \(count + 1)")
        }
        guard wire.offsets.first == 0, wire.offsets.last == Int64(wire.pixels.count) else {
            throw WireError.invalidArgument(
                "\(field).offsets must run from 0 to the \(wire.pixels.count) pixels listed")
        }
        for k in 0..<count where wire.offsets[k] > wire.offsets[k + 1] {
            throw WireError.invalidArgument("\(field).offsets decrease at mask \(k)")
        }
        guard wire.pixelCount <= UInt64(Int32.max) else {
            throw WireError.invalidArgument("\(field).pixel_count \(wire.pixelCount) is out of range")
        }
        let pixelCount = Int(wire.pixelCount)
        if let j = wire.pixels.firstIndex(where: { $0 < 0 || Int($0) >= pixelCount }) {
            throw WireError.invalidArgument(
                "\(field).pixels[\(j)] = \(wire.pixels[j]) lies outside the \(pixelCount) pixel positions")
        }
        if let k = wire.multiplicity.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
            throw WireError.invalidArgument(
                "\(field).multiplicity[\(k)] = \(wire.multiplicity[k]) must be finite and non-negative")
        }
        self.init(masks: [], pixelCount: pixelCount)
        offsets = wire.offsets.map { Int($0) }
        pixels = wire.pixels
        multiplicity = wire.multiplicity
    }
}
