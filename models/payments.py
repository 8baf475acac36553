"""payments: tables (to be filled by the payments work)."""
