import Crypto
import Foundation

/// The opening of a connection: mutual HMAC-SHA256 challenge-response over a shared cluster token.
///
/// ```
///  client (coordinator)                                   server (worker / network)
///    Hello { "PSPC", version, role, client nonce } ---->   checks magic, then version, then role
///          <---- Challenge { server nonce, HMAC(token, "pspc-server" || cn || sn) }
///    verifies the server's proof
///    Proof { HMAC(token, "pspc-client" || sn || cn) } ---->   verifies the client's proof
///          <---- Welcome { node id, role, worker info }         (sealed: see SessionKeys)
/// ```
///
/// Before the Welcome, frames are plain and limited to `FrameSecurity.handshakeMaxFrameSize`; from the
/// client's first frame after its Proof and from the server's Welcome on, every frame carries a MAC under a
/// key derived from the token and both nonces (`SessionKeys`).
///
/// Both sides prove they hold the token without sending it; the labels and the nonce order differ
/// between the two proofs, so neither can be replayed or reflected as the other. Anything else before
/// the Welcome ends the connection with an error frame. `HandshakeClient` and `HandshakeServer` are plain
/// state machines: the connection handler feeds them frames and does what they return.
public enum Handshake {
    /// Bytes of each side's nonce.
    public static let nonceSize = 32

    static let serverLabel = Array("pspc-server".utf8)
    static let clientLabel = Array("pspc-client".utf8)

    /// HMAC(token, "pspc-server" || client nonce || server nonce).
    static func serverProof(token: [UInt8], clientNonce: [UInt8], serverNonce: [UInt8]) -> [UInt8] {
        Array(
            HMAC<SHA256>.authenticationCode(
                for: serverLabel + clientNonce + serverNonce, using: SymmetricKey(data: token)))
    }

    /// HMAC(token, "pspc-client" || server nonce || client nonce).
    static func clientProof(token: [UInt8], clientNonce: [UInt8], serverNonce: [UInt8]) -> [UInt8] {
        Array(
            HMAC<SHA256>.authenticationCode(
                for: clientLabel + serverNonce + clientNonce, using: SymmetricKey(data: token)))
    }

    /// Constant-time check of a proof.
    static func verify(_ proof: [UInt8], message: [UInt8], token: [UInt8]) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: message, using: SymmetricKey(data: token))
    }

    static func nonce(using rng: inout some RandomNumberGenerator) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(nonceSize)
        while bytes.count < nonceSize {
            var word = rng.next()
            for _ in 0..<8 {
                bytes.append(UInt8(truncatingIfNeeded: word))
                word >>= 8
            }
        }
        return Array(bytes.prefix(nonceSize))
    }

    /// The token as kept by the state machines (`SymmetricKey` is not `Sendable`, so it is made per use).
    static func checkedToken(_ token: [UInt8]) throws -> [UInt8] {
        guard !token.isEmpty else { throw WireError.invalidArgument("the cluster token is empty") }
        return token
    }

    /// Why a role field does not name a known, specified role; nil when it does.
    static func roleError(_ role: Pspc_V1_Role, field: String) -> WireError? {
        switch role {
        case .coordinator, .worker, .network: return nil
        case .unspecified, .UNRECOGNIZED: return .unknownEnumValue(field: field, value: role.rawValue)
        }
    }
}

/// Who is on the other end once the handshake succeeded.
public struct HandshakePeer: Sendable, Equatable {
    public var role: Pspc_V1_Role
    public var nodeID: String
    /// What a server said about itself in its Welcome; nil on the server side, or when it said nothing.
    public var info: Pspc_V1_WorkerInfo?

    public init(role: Pspc_V1_Role, nodeID: String, info: Pspc_V1_WorkerInfo? = nil) {
        self.role = role
        self.nodeID = nodeID
        self.info = info
    }
}

/// What the connection handler does after feeding a frame to a handshake state machine.
public enum HandshakeAction: Sendable, Equatable {
    /// Send this frame and wait for the peer's next one.
    case send(Pspc_V1_Frame)
    /// Send this frame, if any, and from now on treat the connection as authenticated.
    case established(HandshakePeer, send: Pspc_V1_Frame?)
    /// Send this error frame, if any, then close the connection.
    case fail(WireError, send: Pspc_V1_Frame?)
}

/// The client's side of the handshake (a coordinator connecting to a worker or network endpoint).
/// Call `start()` once and send its frame, then feed every received frame to `receive(_:)` until it
/// returns `.established` or `.fail`.
public struct HandshakeClient: Sendable {
    private enum State: Sendable {
        case initial
        case awaitingChallenge
        case awaitingWelcome
        case established(HandshakePeer)
        case failed(WireError)
    }

    private let token: [UInt8]
    private let role: Pspc_V1_Role
    private let nodeID: String
    private let nonce: [UInt8]
    private var serverNonce: [UInt8] = []
    private var state = State.initial
    /// The connection's frame keys, known once the server's challenge verified: the client seals every frame
    /// after its Proof and expects the Welcome sealed.
    public private(set) var sessionKeys: SessionKeys?

    /// `token` is the shared cluster secret (non-empty); the nonce comes from `rng`, which should be a
    /// cryptographic generator outside tests.
    public init(
        token: [UInt8], role: Pspc_V1_Role = .coordinator, nodeID: String = "",
        using rng: inout some RandomNumberGenerator
    ) throws {
        if let error = Handshake.roleError(role, field: "client role") { throw error }
        self.token = try Handshake.checkedToken(token)
        self.role = role
        self.nodeID = nodeID
        self.nonce = Handshake.nonce(using: &rng)
    }

    /// A client whose nonce comes from the system's cryptographic generator.
    public init(token: [UInt8], role: Pspc_V1_Role = .coordinator, nodeID: String = "") throws {
        var rng = SystemRandomNumberGenerator()
        try self.init(token: token, role: role, nodeID: nodeID, using: &rng)
    }

    public var isEstablished: Bool {
        if case .established = state { return true }
        return false
    }

    /// The Hello that opens the connection; call once, first.
    public mutating func start() -> Pspc_V1_Frame {
        precondition(isInitial, "HandshakeClient.start() called twice")
        var hello = Pspc_V1_Hello()
        hello.magic = Data(PSPCWire.magic)
        hello.protocolVersion = PSPCWire.protocolVersion
        hello.role = role
        hello.nonce = Data(nonce)
        hello.nodeID = nodeID
        state = .awaitingChallenge
        return Pspc_V1_Frame(requestID: 0, body: .hello(hello))
    }

    public mutating func receive(_ frame: Pspc_V1_Frame) -> HandshakeAction {
        switch (state, frame.body) {
        case (.failed(let error), _):
            return .fail(error, send: nil)
        case (_, .error(let reply)):
            return fail(WireError(reply: reply), tellPeer: false, requestID: frame.requestID)
        case (.awaitingChallenge, .challenge(let challenge)):
            guard challenge.nonce.count == Handshake.nonceSize else {
                return fail(
                    .malformedFrame("the server nonce has \(challenge.nonce.count) bytes, not \(Handshake.nonceSize)"),
                    requestID: frame.requestID)
            }
            let sn = [UInt8](challenge.nonce)
            let expected = Handshake.serverLabel + nonce + sn
            guard Handshake.verify([UInt8](challenge.proof), message: expected, token: token) else {
                return fail(.authenticationFailed, requestID: frame.requestID)
            }
            serverNonce = sn
            sessionKeys = SessionKeys(token: token, clientNonce: nonce, serverNonce: sn)
            var proof = Pspc_V1_Proof()
            proof.proof = Data(Handshake.clientProof(token: token, clientNonce: nonce, serverNonce: sn))
            state = .awaitingWelcome
            return .send(Pspc_V1_Frame(requestID: 0, body: .proof(proof)))
        case (.awaitingWelcome, .welcome(let welcome)):
            if let error = Handshake.roleError(welcome.role, field: "welcome.role") {
                return fail(error, requestID: frame.requestID)
            }
            let peer = HandshakePeer(
                role: welcome.role, nodeID: welcome.nodeID, info: welcome.hasInfo ? welcome.info : nil)
            state = .established(peer)
            return .established(peer, send: nil)
        case (.initial, _):
            return fail(
                .unexpectedMessage(expected: "nothing before the client's hello", got: frame.bodyName),
                requestID: frame.requestID)
        case (.awaitingChallenge, _):
            return fail(.unexpectedMessage(expected: "challenge", got: frame.bodyName), requestID: frame.requestID)
        case (.awaitingWelcome, _):
            return fail(.unexpectedMessage(expected: "welcome", got: frame.bodyName), requestID: frame.requestID)
        case (.established, _):
            return .fail(
                .unexpectedMessage(expected: "no handshake frame after the welcome", got: frame.bodyName),
                send: nil)
        }
    }

    private var isInitial: Bool {
        if case .initial = state { return true }
        return false
    }

    private mutating func fail(_ error: WireError, tellPeer: Bool = true, requestID: UInt64) -> HandshakeAction {
        state = .failed(error)
        return .fail(error, send: tellPeer ? .error(error, requestID: requestID) : nil)
    }
}

/// The server's side of the handshake (a worker or network endpoint accepting a connection). Feed every
/// received frame to `receive(_:)` until it returns `.established` (send the Welcome it carries) or
/// `.fail` (send the error frame it carries and close).
public struct HandshakeServer: Sendable {
    private enum State: Sendable {
        case awaitingHello
        case awaitingProof(clientNonce: [UInt8], peer: HandshakePeer)
        case established(HandshakePeer)
        case failed(WireError)
    }

    private let token: [UInt8]
    private let welcome: Pspc_V1_Welcome
    private let acceptedRoles: Set<Pspc_V1_Role>
    private let nonce: [UInt8]
    private var state = State.awaitingHello
    /// The connection's frame keys, known once the client's proof verified: the Welcome and every frame after
    /// it are sealed.
    public private(set) var sessionKeys: SessionKeys?

    /// `token` is the shared cluster secret (non-empty); `role`, `nodeID` and `info` go into the Welcome;
    /// Hellos from roles outside `acceptedRoles` are refused. The nonce comes from `rng`, which should be a
    /// cryptographic generator outside tests.
    public init(
        token: [UInt8], role: Pspc_V1_Role = .worker, nodeID: String = "", info: Pspc_V1_WorkerInfo? = nil,
        acceptedRoles: Set<Pspc_V1_Role> = [.coordinator, .worker, .network],
        using rng: inout some RandomNumberGenerator
    ) throws {
        if let error = Handshake.roleError(role, field: "server role") { throw error }
        self.token = try Handshake.checkedToken(token)
        var welcome = Pspc_V1_Welcome()
        welcome.role = role
        welcome.nodeID = nodeID
        if let info { welcome.info = info }
        self.welcome = welcome
        self.acceptedRoles = acceptedRoles
        self.nonce = Handshake.nonce(using: &rng)
    }

    /// A server whose nonce comes from the system's cryptographic generator.
    public init(
        token: [UInt8], role: Pspc_V1_Role = .worker, nodeID: String = "", info: Pspc_V1_WorkerInfo? = nil,
        acceptedRoles: Set<Pspc_V1_Role> = [.coordinator, .worker, .network]
    ) throws {
        var rng = SystemRandomNumberGenerator()
        try self.init(token: token, role: role, nodeID: nodeID, info: info, acceptedRoles: acceptedRoles, using: &rng)
    }

    public var isEstablished: Bool {
        if case .established = state { return true }
        return false
    }

    public mutating func receive(_ frame: Pspc_V1_Frame) -> HandshakeAction {
        switch (state, frame.body) {
        case (.failed(let error), _):
            return .fail(error, send: nil)
        case (.established, _):
            return .fail(
                .unexpectedMessage(expected: "no handshake frame after the welcome", got: frame.bodyName),
                send: nil)
        case (_, .error(let reply)):
            return fail(WireError(reply: reply), tellPeer: false, requestID: frame.requestID)
        case (.awaitingHello, .hello(let hello)):
            // Magic first: a stranger is told so before anything about versions or roles.
            guard hello.magic.elementsEqual(PSPCWire.magic) else {
                return fail(.badMagic(got: Array(hello.magic.prefix(16))), requestID: frame.requestID)
            }
            guard hello.protocolVersion == PSPCWire.protocolVersion else {
                return fail(
                    .unsupportedVersion(got: hello.protocolVersion, supported: PSPCWire.protocolVersion),
                    requestID: frame.requestID)
            }
            if let error = Handshake.roleError(hello.role, field: "hello.role") {
                return fail(error, requestID: frame.requestID)
            }
            guard acceptedRoles.contains(hello.role) else {
                return fail(.roleNotAccepted(hello.role), requestID: frame.requestID)
            }
            guard hello.nonce.count == Handshake.nonceSize else {
                return fail(
                    .malformedFrame("the client nonce has \(hello.nonce.count) bytes, not \(Handshake.nonceSize)"),
                    requestID: frame.requestID)
            }
            let cn = [UInt8](hello.nonce)
            var challenge = Pspc_V1_Challenge()
            challenge.nonce = Data(nonce)
            challenge.proof = Data(Handshake.serverProof(token: token, clientNonce: cn, serverNonce: nonce))
            state = .awaitingProof(clientNonce: cn, peer: HandshakePeer(role: hello.role, nodeID: hello.nodeID))
            return .send(Pspc_V1_Frame(requestID: 0, body: .challenge(challenge)))
        case (.awaitingProof(let cn, let peer), .proof(let proof)):
            let expected = Handshake.clientLabel + nonce + cn
            guard Handshake.verify([UInt8](proof.proof), message: expected, token: token) else {
                return fail(.authenticationFailed, requestID: frame.requestID)
            }
            sessionKeys = SessionKeys(token: token, clientNonce: cn, serverNonce: nonce)
            state = .established(peer)
            return .established(peer, send: Pspc_V1_Frame(requestID: 0, body: .welcome(welcome)))
        case (.awaitingHello, _):
            return fail(.unexpectedMessage(expected: "hello", got: frame.bodyName), requestID: frame.requestID)
        case (.awaitingProof, _):
            return fail(.unexpectedMessage(expected: "proof", got: frame.bodyName), requestID: frame.requestID)
        }
    }

    private mutating func fail(_ error: WireError, tellPeer: Bool = true, requestID: UInt64) -> HandshakeAction {
        state = .failed(error)
        return .fail(error, send: tellPeer ? .error(error, requestID: requestID) : nil)
    }
}
