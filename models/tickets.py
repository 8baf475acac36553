"""tickets: tables (to be filled by the tickets work)."""
