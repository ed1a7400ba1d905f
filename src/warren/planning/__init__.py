"""Pure decisions: given a read-only view of state and ``now``, return what should be done.

No ``await``, no clock reads, no I/O imports (checked by import-linter). Controllers build the
views, call these functions, and apply the results idempotently.
"""
