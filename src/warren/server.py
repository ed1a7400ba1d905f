"""server (being built)."""
