"""cart: tables (to be filled by the cart work)."""
