"""One target at a time: its state, identity, and what to do on each stop (no I/O)."""
