import Crypto
import Foundation
import PSPCWire
import XCTest

final class HandshakeTests: XCTestCase {
    private let token = Array("correct horse battery staple / pspc cluster token".utf8)

    private func client(token: [UInt8]? = nil, seed: UInt64 = 1, role: Pspc_V1_Role = .coordinator) throws
        -> HandshakeClient
    {
        var rng = SplitMix64(seed: seed)
        return try HandshakeClient(token: token ?? self.token, role: role, nodeID: "coordinator-0", using: &rng)
    }

    private func server(
        token: [UInt8]? = nil, seed: UInt64 = 2, acceptedRoles: Set<Pspc_V1_Role> = [.coordinator, .worker, .network]
    ) throws -> HandshakeServer {
        var rng = SplitMix64(seed: seed)
        return try HandshakeServer(
            token: token ?? self.token, role: .worker, nodeID: "worker-7", info: WireTestSupport.workerInfo(),
            acceptedRoles: acceptedRoles, using: &rng)
    }

    private struct Outcome {
        var client: HandshakeAction?
        var server: HandshakeAction?
        /// Every frame put on the wire, in order, through the real codec.
        var wire: [[UInt8]] = []
    }

    /// Runs the exchange until one side establishes or fails, passing every frame through encode/decode.
    private func run(_ client: inout HandshakeClient, _ server: inout HandshakeServer) throws -> Outcome {
        var outcome = Outcome()
        func transmit(_ frame: Pspc_V1_Frame) throws -> Pspc_V1_Frame {
            let bytes = try FrameCodec.encodeFrame(frame)
            outcome.wire.append(bytes)
            let decoded = try FrameCodec.decodeFrames(bytes)
            XCTAssertEqual(decoded.frames, [frame])
            return decoded.frames[0]
        }
        var toServer: Pspc_V1_Frame? = try transmit(client.start())
        while let frame = toServer {
            toServer = nil
            let serverAction = server.receive(frame)
            outcome.server = serverAction
            let reply: Pspc_V1_Frame?
            switch serverAction {
            case .send(let f): reply = f
            case .established(_, let f): reply = f
            case .fail(_, let f): reply = f
            }
            guard let reply else { break }
            let clientAction = client.receive(try transmit(reply))
            outcome.client = clientAction
            switch clientAction {
            case .send(let f): toServer = try transmit(f)
            case .fail(_, let f?): _ = server.receive(try transmit(f))
            default: break
            }
        }
        return outcome
    }

    private func containsToken(_ bytes: [UInt8], _ token: [UInt8]) -> Bool {
        guard bytes.count >= token.count else { return false }
        return (0...(bytes.count - token.count)).contains { bytes[$0..<($0 + token.count)].elementsEqual(token) }
    }

    func testBothSidesEstablish() throws {
        var c = try client()
        var s = try server()
        let outcome = try run(&c, &s)
        XCTAssertEqual(
            outcome.server,
            .established(
                HandshakePeer(role: .coordinator, nodeID: "coordinator-0"),
                send: {
                    var welcome = Pspc_V1_Welcome()
                    welcome.role = .worker
                    welcome.nodeID = "worker-7"
                    welcome.info = WireTestSupport.workerInfo()
                    return Pspc_V1_Frame(requestID: 0, body: .welcome(welcome))
                }()))
        XCTAssertEqual(
            outcome.client,
            .established(
                HandshakePeer(role: .worker, nodeID: "worker-7", info: WireTestSupport.workerInfo()), send: nil))
        XCTAssertTrue(c.isEstablished)
        XCTAssertTrue(s.isEstablished)
        XCTAssertEqual(outcome.wire.count, 4, "hello, challenge, proof, welcome")
        XCTAssertFalse(outcome.wire.contains { containsToken($0, token) }, "the token never travels")
    }

    /// Any of the three roles can open a connection; seeded generators make the exchange replay exactly.
    func testEveryRoleAndDeterministicNonces() throws {
        for role: Pspc_V1_Role in [.coordinator, .worker, .network] {
            var c1 = try client(role: role), s1 = try server()
            var c2 = try client(role: role), s2 = try server()
            let first = try run(&c1, &s1), second = try run(&c2, &s2)
            XCTAssertEqual(first.wire, second.wire)
            guard case .established(let peer, _) = first.server else {
                return XCTFail("\(role): \(String(describing: first.server))")
            }
            XCTAssertEqual(peer.role, role)
        }
        var c3 = try client(seed: 99), s3 = try server()
        var c1 = try client(), s1 = try server()
        XCTAssertNotEqual(try run(&c3, &s3).wire[0], try run(&c1, &s1).wire[0], "another seed, another nonce")
    }

    func testClientRejectsServerWithWrongToken() throws {
        let wrong = Array("a guess at the token".utf8)
        var c = try client()
        var s = try server(token: wrong)
        let outcome = try run(&c, &s)
        guard case .fail(let error, let frame?) = outcome.client else {
            return XCTFail("client: \(String(describing: outcome.client))")
        }
        XCTAssertEqual(error, .authenticationFailed)
        XCTAssertEqual(frame.bodyName, "error")
        XCTAssertFalse(c.isEstablished)
        XCTAssertFalse(s.isEstablished)
        XCTAssertEqual(outcome.wire.count, 3, "hello, challenge, error: no proof is sent to an impostor")
        XCTAssertFalse(outcome.wire.contains { containsToken($0, token) || containsToken($0, wrong) })
        // The server learned of the failure from the error frame and says so from now on.
        guard case .fail(.peerError(.authenticationFailed, _), nil) = s.receive(Pspc_V1_Frame()) else {
            return XCTFail("server should have failed on the client's error")
        }
    }

    /// A client that does not hold the token (so ignores the server's proof and answers anything) is refused.
    func testServerRejectsClientWithWrongToken() throws {
        let wrong = Array("a guess at the token".utf8)
        var s = try server()
        var impostor = try client(token: wrong)
        guard case .send(let challengeFrame) = s.receive(impostor.start()),
            case .challenge(let challenge)? = challengeFrame.body
        else { return XCTFail("no challenge") }
        // The impostor's best effort: the client proof under its own token.
        var hello = try client(token: wrong)
        guard case .hello(let h)? = hello.start().body else { return XCTFail() }
        var proof = Pspc_V1_Proof()
        proof.proof = Data(
            HMAC<SHA256>.authenticationCode(
                for: Array("pspc-client".utf8) + [UInt8](challenge.nonce) + [UInt8](h.nonce),
                using: SymmetricKey(data: wrong)))
        let action = s.receive(Pspc_V1_Frame(requestID: 0, body: .proof(proof)))
        guard case .fail(.authenticationFailed, let reply?) = action, case .error(let e)? = reply.body else {
            return XCTFail("\(action)")
        }
        XCTAssertEqual(e.code, .authenticationFailed)
        XCTAssertFalse(s.isEstablished)
        XCTAssertFalse(containsToken(try FrameCodec.encodeFrame(reply), token))
    }

    /// The server's own proof, reflected back as the client's, does not verify (labels and nonce order differ).
    func testReflectedServerProofIsRejected() throws {
        var s = try server()
        var c = try client()
        guard case .send(let frame) = s.receive(c.start()), case .challenge(let challenge)? = frame.body else {
            return XCTFail()
        }
        var proof = Pspc_V1_Proof()
        proof.proof = challenge.proof
        guard case .fail(.authenticationFailed, _) = s.receive(Pspc_V1_Frame(requestID: 0, body: .proof(proof))) else {
            return XCTFail()
        }
    }

    private func hello(
        magic: [UInt8] = PSPCWire.magic, version: UInt32 = PSPCWire.protocolVersion, role: Pspc_V1_Role = .coordinator,
        nonceSize: Int = 32
    ) -> Pspc_V1_Frame {
        var hello = Pspc_V1_Hello()
        hello.magic = Data(magic)
        hello.protocolVersion = version
        hello.role = role
        hello.nonce = Data(repeating: 1, count: nonceSize)
        return Pspc_V1_Frame(requestID: 4, body: .hello(hello))
    }

    private func expectFailure(
        _ frame: Pspc_V1_Frame, _ expected: WireError, code: Pspc_V1_ErrorCode,
        server: HandshakeServer? = nil, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        var s = try server ?? self.server()
        let action = s.receive(frame)
        guard case .fail(let error, let reply?) = action, case .error(let e)? = reply.body else {
            return XCTFail("\(action)", file: file, line: line)
        }
        XCTAssertEqual(error, expected, file: file, line: line)
        XCTAssertEqual(e.code, code, file: file, line: line)
        XCTAssertEqual(reply.requestID, frame.requestID, "the error echoes the request id", file: file, line: line)
        XCTAssertFalse(s.isEstablished, file: file, line: line)
        // Once failed, it stays failed and sends nothing more.
        XCTAssertEqual(s.receive(hello()), .fail(expected, send: nil), file: file, line: line)
    }

    func testBadMagicIsCheckedFirst() throws {
        try expectFailure(hello(magic: Array("GET ".utf8)), .badMagic(got: Array("GET ".utf8)), code: .badMagic)
        // Bad magic and a wrong version and no role: the magic is what is reported.
        try expectFailure(hello(magic: [], version: 9, role: .unspecified), .badMagic(got: []), code: .badMagic)
    }

    func testWrongVersion() throws {
        try expectFailure(hello(version: 1), .unsupportedVersion(got: 1, supported: 2), code: .unsupportedVersion)
        try expectFailure(hello(version: 0), .unsupportedVersion(got: 0, supported: 2), code: .unsupportedVersion)
    }

    func testUnknownOrRefusedRole() throws {
        try expectFailure(
            hello(role: .unspecified), .unknownEnumValue(field: "hello.role", value: 0), code: .invalidArgument)
        try expectFailure(
            hello(role: .UNRECOGNIZED(17)), .unknownEnumValue(field: "hello.role", value: 17),
            code: .invalidArgument)
        try expectFailure(
            hello(role: .network), .roleNotAccepted(.network), code: .authenticationFailed,
            server: try server(acceptedRoles: [.coordinator]))
    }

    func testShortNonce() throws {
        try expectFailure(
            hello(nonceSize: 8), .malformedFrame("the client nonce has 8 bytes, not 32"), code: .malformedFrame)
    }

    func testOperationsBeforeTheHandshakeAreRejected() throws {
        var rng = SplitMix64(seed: 3)
        for frame in WireTestSupport.frames(rng: &rng) where frame.bodyName != "hello" && frame.bodyName != "error" {
            try expectFailure(
                frame, .unexpectedMessage(expected: "hello", got: frame.bodyName), code: .unexpectedMessage)
        }
        // Between the hello and the proof, too.
        var s = try server()
        var c = try client()
        guard case .send = s.receive(c.start()) else { return XCTFail() }
        let op = Pspc_V1_Frame(requestID: 9, body: .partialRequest(Pspc_V1_PartialRequest(.moments(rows: nil))))
        guard case .fail(.unexpectedMessage(expected: "proof", got: "partial_request"), let reply?) = s.receive(op)
        else {
            return XCTFail()
        }
        XCTAssertEqual(reply.requestID, 9)
        // And a second hello is no proof.
        guard
            case .fail = try {
                var s2 = try server(); _ = s2.receive(hello()); return s2.receive(hello())
            }()
        else {
            return XCTFail()
        }
    }

    func testFramesAfterTheWelcomeAreNotHandshakeFrames() throws {
        var c = try client()
        var s = try server()
        _ = try run(&c, &s)
        guard case .fail(.unexpectedMessage, nil) = s.receive(hello()) else { return XCTFail() }
        guard case .fail(.unexpectedMessage, nil) = c.receive(hello()) else { return XCTFail() }
    }

    func testClientRejectsOutOfOrderOrErrorReplies() throws {
        var c = try client()
        _ = c.start()
        var welcome = Pspc_V1_Welcome()
        welcome.role = .worker
        guard
            case .fail(.unexpectedMessage(expected: "challenge", got: "welcome"), _?) =
                c.receive(Pspc_V1_Frame(requestID: 0, body: .welcome(welcome)))
        else { return XCTFail() }

        var c2 = try client()
        _ = c2.start()
        let refusal = Pspc_V1_Frame.error(.unsupportedVersion(got: 1, supported: 2))
        guard case .fail(.peerError(.unsupportedVersion, let message), nil) = c2.receive(refusal) else {
            return XCTFail()
        }
        XCTAssertTrue(message.contains("version 1"))

        var c3 = try client()
        guard case .fail(.unexpectedMessage, _) = c3.receive(hello()) else { return XCTFail("before start") }
    }

    func testWelcomeWithUnknownRoleIsRejected() throws {
        var c = try client()
        var s = try server()
        guard case .send(let challenge) = s.receive(c.start()), case .send = c.receive(challenge) else {
            return XCTFail()
        }
        var welcome = Pspc_V1_Welcome()
        welcome.role = .UNRECOGNIZED(5)
        guard
            case .fail(.unknownEnumValue(field: "welcome.role", value: 5), _?) =
                c.receive(Pspc_V1_Frame(requestID: 0, body: .welcome(welcome)))
        else { return XCTFail() }
    }

    func testEmptyTokenIsRefused() {
        var rng = SplitMix64(seed: 1)
        assertWireError(try HandshakeClient(token: [], using: &rng))
        assertWireError(try HandshakeServer(token: [], using: &rng))
        assertWireError(try HandshakeServer(token: token, role: .unspecified, using: &rng))
    }
}
