"""bonuses on the wire."""
