"""fines on the wire."""
