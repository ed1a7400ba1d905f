"""client (being built)."""
