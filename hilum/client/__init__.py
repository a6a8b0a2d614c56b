"""The client side of `hilum`: commands that talk to a Hilum server over HTTP (never importing service code)."""
