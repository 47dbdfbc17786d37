import Foundation
import XCTest

/// The project's Python environment and a small random-weight network checkpoint for end-to-end tests.
public enum NetworkFixture {
    /// The checkout's root (above Tests/).
    public static var root: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    public static var python: String { root + "/.venv/bin/python" }

    /// What `pspc` needs to start the endpoint from this checkout.
    public static var environment: [String: String] { ["PSPC_PYTHON": python, "PSPC_SCRIPTS": root + "/scripts"] }

    /// Runs `script` with the project's Python (torch, numpy, pspc_net importable); fails the test on error.
    public static func run(_ script: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", "import sys; sys.path.insert(0, '\(root)/scripts')\n" + script]
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "the Python fixture failed")
    }

    /// Writes a small random-weight EDM network (the `tiny` preset, 28x28, seeded) to `path`. `extra` runs
    /// after it with `net` in scope.
    public static func makeNetwork(at path: String, extra: String = "") throws {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            XCTFail("\(python) is missing: scripts/setup-python.sh makes it (scripts/test.sh runs it first)")
            return
        }
        try run(
            """
            import torch, numpy as np
            from pspc_net.model import EDMPrecond, save_checkpoint
            torch.manual_seed(0)
            net = EDMPrecond.from_preset('tiny', img_resolution=28)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            net.eval()
            save_checkpoint(net, '\(path)')
            """ + "\n" + extra)
    }

    /// Writes a small untrained epsilon network (two 3x3 convolutions with a tanh between, seeded) as
    /// TorchScript to `path`, for the endpoint's `vp-eps` adapter with `--shape 1,R,R`: its Jacobian is
    /// cheap at any resolution (each output pixel sees its 5x5 neighbourhood).
    public static func makeConvNetwork(at path: String) throws {
        try run(
            """
            import torch
            torch.manual_seed(0)
            class Eps(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.a = torch.nn.Conv2d(1, 4, 3, padding=1)
                    self.b = torch.nn.Conv2d(4, 1, 3, padding=1)
                def forward(self, x, timestep):
                    return self.b(torch.tanh(self.a(x)))
            # Traced (scripting needs a source file); the trace holds for any batch and image size.
            torch.jit.save(torch.jit.trace(Eps().eval(), (torch.zeros(2, 1, 8, 8), torch.zeros(2))), '\(path)')
            """)
    }
}
