"""The audit trail: an append-only, hash-chained log of moves, decisions and changes."""
