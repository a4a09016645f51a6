"""Moving bytes: serial ports, pseudo-terminals, sockets; finding candidate links."""
