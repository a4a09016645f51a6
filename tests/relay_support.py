"""Driving tests/remote_kd_host.py (a second KD host, in a process of its own) from a test."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

REMOTE_KD_HOST = Path(__file__).resolve().parent / "remote_kd_host.py"
# How long a command may take beyond its own timeout (a read over a slow, noisy line).
ANSWER_SECONDS = 60.0


class RemoteHost:
    """One remote debugger process attached to a relay (`tcp:HOST:PORT` or `unix:PATH`)."""

    def __init__(self, process: asyncio.subprocess.Process, where: str) -> None:
        self.process = process
        self.where = where

    @classmethod
    async def start(cls, where: str) -> RemoteHost:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REMOTE_KD_HOST),
            where,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        remote = cls(process, where)
        ready = await remote._line(30.0)
        assert ready == {"ready": True}, ready
        return remote

    async def _line(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise AssertionError(f"the remote KD host exited: {await self.stderr()}")
        answer = json.loads(line)
        assert isinstance(answer, dict)
        return answer

    async def ask(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Run one command; its answer (a failure answers {"error": ...}). A `timeout`
        argument is the command's own (wait_stop's); the answer is awaited longer."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}).encode() + b"\n")
        await self.process.stdin.drain()
        return await self._line(ANSWER_SECONDS + float(arguments.get("timeout", 0)))

    async def must(self, op: str, **arguments: Any) -> dict[str, Any]:
        answer = await self.ask(op, **arguments)
        assert "error" not in answer, f"{op}: {answer['error']}"
        return answer

    def send(self, op: str, **arguments: Any) -> None:
        """Start a command without waiting for its answer."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}).encode() + b"\n")

    async def read(self, kind: str, address: int, size: int) -> bytes:
        answer = await self.must(f"read_{kind}", address=address, size=size)
        return bytes.fromhex(answer["data"])

    async def exit(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.write(b'{"op": "exit"}\n')
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def stderr(self) -> str:
        if self.process.returncode is None:
            return "(still running)"
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode(errors="replace")[-3000:]
