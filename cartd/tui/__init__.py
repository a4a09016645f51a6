"""The Textual TUI (`cartd tui`): a client of the daemon's control socket, never of its
internals (docs/control-protocol.md is the only contract)."""
