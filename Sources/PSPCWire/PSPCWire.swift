/// The wire protocol (filled in by the wire work).
public enum PSPCWire {}
