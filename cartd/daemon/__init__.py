"""The asyncio service: links, KD connections, control socket, shutdown."""
