"""orders: tables (to be filled by the orders work)."""
