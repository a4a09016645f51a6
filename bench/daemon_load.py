"""Daemon cost: CPU per 1,000 DbgPrint lines, memory after 100,000, and the demo's first event.

Run with `.venv/bin/python bench/daemon_load.py`. A KD target written for this bench (the
protocol core in TARGET role, no simulator scenario) sends DbgPrint lines over an unpaced
pseudo-terminal to a real `cartd run` process as fast as the daemon acknowledges them; the
daemon decodes, journals, writes the console log and the wire capture for every line. The
figures come from /proc for the daemon's process, measured in this one run:

1. CPU seconds the daemon used per 1,000 lines, and what that means at 115200 baud (the share
   of one core the daemon needs to keep up with a serial line full of DbgPrint);
2. the daemon's resident memory after the lines, next to its size before them;
3. seconds from starting `cartd demo` to its first event on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cartd.kd.target import KdTarget, PacketDelivered
from cartd.links.streams import FdStream, LinkClosed, open_pty_pair

LINE = b"cartd bench: a DbgPrint line of a typical length, number %08d\n"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def resident_mib(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * PAGE_SIZE / (1 << 20)


async def send_lines(stream: FdStream, target: KdTarget, count: int) -> None:
    """Send `count` DbgPrint lines, each after the previous one was acknowledged."""
    loop = asyncio.get_running_loop()
    sent = delivered = 0

    async def pump() -> None:
        nonlocal delivered
        while delivered < count:
            data = await stream.read()
            target.receive_data(data, loop.time())
            while (event := target.next_event()) is not None:
                if isinstance(event, PacketDelivered):
                    delivered += 1
            stream.write(target.data_to_send())

    reader = asyncio.create_task(pump())
    while sent < count and not reader.done():
        if target.idle:
            target.send_debug_print(LINE % sent, loop.time())
            stream.write(target.data_to_send())
            sent += 1
        else:
            await asyncio.sleep(0)
            deadline = target.get_timer()
            if deadline is not None and loop.time() >= deadline:
                target.handle_timer(loop.time())
                stream.write(target.data_to_send())
    await reader


async def measure_daemon(lines: int) -> None:
    state = Path(tempfile.mkdtemp(prefix="cartd-bench-"))
    master, slave = open_pty_pair()
    config = state / "cartd.toml"
    config.write_text(
        f'[serial]\nports = ["{slave}"]\nprobe_seconds = 0.5\nactive_probe = "all"\n'
        "[capture]\nquota_mb = 100000\n"
    )
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cartd",
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(state / "records"),
        ],
        stderr=subprocess.DEVNULL,
    )
    target = KdTarget(ack_timeout=2.0)
    try:
        # A few lines first so the daemon has found the port and settled.
        await asyncio.wait_for(send_lines(master, target, 200), 60)
        before_cpu, before_rss = cpu_seconds(daemon.pid), resident_mib(daemon.pid)
        started = time.perf_counter()
        await asyncio.wait_for(send_lines(master, target, lines), 3600)
        elapsed = time.perf_counter() - started
        used = cpu_seconds(daemon.pid) - before_cpu
        after_rss = resident_mib(daemon.pid)
    except LinkClosed as error:
        raise SystemExit(f"the pty closed: {error}") from error
    finally:
        daemon.terminate()
        daemon.wait(30)
        master.close()
    per_thousand = used / lines * 1000
    # What 115200 baud carries of these lines: the line, the KD framing and the host's ACK.
    wire_bytes = len(LINE % 0) + 16 + 16 + 1 + 16
    lines_per_second_at_115200 = 11520 / wire_bytes
    print(
        f"daemon CPU per 1,000 DbgPrint lines: {per_thousand:.3f} s "
        f"({lines / elapsed:,.0f} lines/s sustained unpaced)"
    )
    print(
        f"share of one core to keep up with a full 115200 baud line "
        f"({lines_per_second_at_115200:.0f} lines/s): "
        f"{per_thousand * lines_per_second_at_115200 / 1000:.1%}"
    )
    print(
        f"daemon resident memory: {before_rss:.1f} MiB before, {after_rss:.1f} MiB after "
        f"{lines:,} lines (ratio {after_rss / before_rss:.2f})"
    )


def demo_first_event() -> float:
    started = time.perf_counter()
    demo = subprocess.Popen(
        [sys.executable, "-m", "cartd", "demo", "--json", "--seconds", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert demo.stdout is not None
    demo.stdout.readline()
    first = time.perf_counter() - started
    demo.wait(60)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(measure_daemon(args.lines))
    print(
        f"cartd demo, start to first event: {demo_first_event():.2f} s (includes starting Python)"
    )


if __name__ == "__main__":
    main()
