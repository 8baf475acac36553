"""tickets on the wire."""
