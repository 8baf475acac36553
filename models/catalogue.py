"""catalogue: tables (to be filled by the catalogue work)."""
