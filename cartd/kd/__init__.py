"""The KD protocol core: sans-I/O, both roles (HOST and TARGET).

Nothing in this package reads a clock, touches a file or socket, or logs: callers pass bytes and
the current time in, and take events, bytes to send and the next deadline out.
"""
