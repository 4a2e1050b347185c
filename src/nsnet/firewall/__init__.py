"""nsnet's packet filter: names and priorities (names.py) and pure rendering of nft JSON (render.py)."""
