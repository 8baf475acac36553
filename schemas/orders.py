"""orders on the wire."""
