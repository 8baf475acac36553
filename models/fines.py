"""fines: tables (to be filled by the fines work)."""
