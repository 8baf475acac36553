"""catalogue on the wire."""
