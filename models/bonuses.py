"""bonuses: tables (to be filled by the bonuses work)."""
