"""payments on the wire."""
