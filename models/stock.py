"""stock: tables (to be filled by the stock work)."""
