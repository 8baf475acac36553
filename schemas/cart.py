"""cart on the wire."""
