"""stock on the wire."""
