"""Byte streams for KD over serial: real serial ports, pseudo-terminals and UNIX sockets.

Every stream offers the same small vocabulary (`read`, `write`, `close`, and `closed` for a
stream whose far end went away), in the hypercorn manner: the OS errors that mean "the link is
gone" (a pty whose other side closed answers EIO, an unplugged USB adapter ENXIO or ENODEV)
become "closed"; anything else propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
import tty
from typing import Protocol

import serial

# OS errors that mean the device or its far side went away.
_GONE_ERRNOS = frozenset(
    {errno.EIO, errno.ENXIO, errno.ENODEV, errno.EBADF, errno.EPIPE, errno.ECONNRESET}
)
_READ_SIZE = 65536


class LinkClosed(Exception):
    """The far side of the link is gone (unplugged, closed, hung up)."""


class ByteStream(Protocol):
    async def read(self) -> bytes:
        """The next bytes that arrived; raises LinkClosed once the link is gone."""
        ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


class FdStream:
    """A non-blocking file descriptor (tty or pty master) driven by the asyncio loop."""

    def __init__(self, fd: int, *, name: str, keep_open: tuple[int, ...] = ()) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self.name = name
        # A pty master reads EIO while no slave is open; holding a slave fd open keeps the
        # master readable across the host closing and reopening its side.
        self._keep_open = keep_open
        self._pending = bytearray()
        self._closed = False
        self._drained: asyncio.Event | None = None

    async def read(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise LinkClosed(self.name)
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                data = None
            except OSError as error:
                if error.errno in _GONE_ERRNOS:
                    raise LinkClosed(f"{self.name}: {error.strerror}") from error
                raise
            if data:
                return data
            if data == b"":
                raise LinkClosed(f"{self.name}: end of file")
            ready = loop.create_future()
            loop.add_reader(self.fd, _set_done, ready)
            try:
                await ready
            finally:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(self.fd)

    def write(self, data: bytes) -> None:
        if self._closed:
            raise LinkClosed(self.name)
        self._pending += data
        self._flush()

    def _flush(self) -> None:
        while self._pending:
            try:
                written = os.write(self.fd, self._pending)
            except BlockingIOError:
                self._wait_writable()
                return
            except OSError as error:
                if error.errno in _GONE_ERRNOS:
                    self._pending.clear()
                    self._closed = True
                    self._wake_drain()
                    return
                raise
            del self._pending[:written]
        self._wake_drain()

    def _wait_writable(self) -> None:
        loop = asyncio.get_running_loop()

        def writable() -> None:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(self.fd)
            self._flush()

        loop.add_writer(self.fd, writable)

    def _wake_drain(self) -> None:
        if self._drained is not None:
            self._drained.set()

    async def drain(self) -> None:
        while self._pending and not self._closed:
            self._drained = asyncio.Event()
            await self._drained.wait()
        if self._closed:
            raise LinkClosed(self.name)

    def close(self) -> None:
        if self._closed and self.fd < 0:
            return
        self._closed = True
        loop = asyncio.get_event_loop()
        for fd in (self.fd, *self._keep_open):
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fd)
            with contextlib.suppress(ValueError, OSError):
                loop.remove_writer(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fd = -1
        self._wake_drain()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def open_serial(path: str, baud: int) -> FdStream:
    """Open a serial device (or a pty slave) raw at `baud` 8N1 without flow control: the
    target drives DTR/RTS but never waits for CTS (spec section 1)."""
    port = serial.Serial()
    port.port = path
    port.baudrate = baud
    port.bytesize = serial.EIGHTBITS
    port.parity = serial.PARITY_NONE
    port.stopbits = serial.STOPBITS_ONE
    port.xonxoff = port.rtscts = port.dsrdtr = False
    port.exclusive = True
    try:
        port.open()
    except serial.SerialException as error:
        raise LinkClosed(f"cannot open {path}: {error}") from error
    # The stream owns the descriptor from here on; pyserial only configured it.
    fd = os.dup(port.fileno())
    port.close()
    # VMIN=1: with no byte waiting a read fails with EAGAIN instead of returning b"", which
    # on a tty would be indistinguishable from end of file.
    attributes = termios.tcgetattr(fd)
    attributes[6][termios.VMIN] = 1
    attributes[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attributes)
    return FdStream(fd, name=path)


def open_pty_pair() -> tuple[FdStream, str]:
    """A new pseudo-terminal: the master as a stream, and the slave's path for the peer."""
    master, slave = os.openpty()
    tty.setraw(slave)
    attributes = termios.tcgetattr(slave)
    attributes[3] &= ~termios.ECHO
    termios.tcsetattr(slave, termios.TCSANOW, attributes)
    path = os.ttyname(slave)
    return FdStream(master, name=path, keep_open=(slave,)), path


class SocketStream:
    """A connected stream socket (asyncio reader/writer pair)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, name: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.name = name

    async def read(self) -> bytes:
        try:
            data = await self._reader.read(_READ_SIZE)
        except OSError as error:
            raise LinkClosed(f"{self.name}: {error}") from error
        if not data:
            raise LinkClosed(f"{self.name}: peer closed the connection")
        return data

    def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise LinkClosed(self.name)
        self._writer.write(data)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except OSError as error:
            raise LinkClosed(f"{self.name}: {error}") from error

    def close(self) -> None:
        self._writer.close()
