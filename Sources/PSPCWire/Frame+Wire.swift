/// Building frames and naming what they carry.
extension Pspc_V1_Frame {
    public init(requestID: UInt64, body: OneOf_Body) {
        self.init()
        self.requestID = requestID
        self.body = body
    }

    /// An `ErrorReply` frame about `error`, echoing the id of the request it answers (0 for the connection).
    public static func error(_ error: WireError, requestID: UInt64 = 0) -> Pspc_V1_Frame {
        Pspc_V1_Frame(requestID: requestID, body: .error(error.reply))
    }

    /// The body, or `unknownOperation` for a frame whose body is empty or of a kind this build does not
    /// know (a newer peer's); the receiver answers the latter with an error frame.
    public func requireBody() throws -> OneOf_Body {
        guard let body else {
            throw WireError.unknownOperation(
                unknownFields.data.isEmpty
                    ? "the frame carries no body" : "the frame's body is of a kind this build does not know")
        }
        return body
    }

    /// The proto field name of the body ("hello", "partial_request", ...), or "nothing"; for messages and logs.
    public var bodyName: String {
        guard let body else { return "nothing" }
        switch body {
        case .hello: return "hello"
        case .challenge: return "challenge"
        case .proof: return "proof"
        case .welcome: return "welcome"
        case .error: return "error"
        case .partialRequest: return "partial_request"
        case .partialResponse: return "partial_response"
        case .denoiseRequest: return "denoise_request"
        case .denoiseResponse: return "denoise_response"
        case .heatmapRequest: return "heatmap_request"
        case .heatmapResponse: return "heatmap_response"
        case .healthRequest: return "health_request"
        case .healthResponse: return "health_response"
        case .cancel: return "cancel"
        case .shutdown: return "shutdown"
        }
    }
}
