import XCTest

final class PSPCWirePlaceholderTests: XCTestCase {
    func testModuleBuilds() {}
}
