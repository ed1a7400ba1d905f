"""deploy (being built)."""
