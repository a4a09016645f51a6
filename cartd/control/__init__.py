"""The control socket: how the CLI, the TUI and scripts talk to a running cartd.

`protocol` is the wire format without I/O (JSON lines, requests, replies, pushed events);
`registry` holds the methods a daemon offers and checks their parameters; `hub` fans the daemon's
events out to subscribers without ever waiting for them; `server` and `client` move the lines over
a UNIX stream socket with asyncio. docs/control-protocol.md describes the protocol for people who
write their own clients.
"""
