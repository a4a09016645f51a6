"""`cartd dump`, the command line, against a daemon holding a bug checked simulated target.

The daemon runs in this process with policy dump_on_bugcheck = "none", so every dump here is
one the command asked for; `cartd` runs as a subprocess with stdin from /dev/null (not a
terminal), as from a script.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import kdmp_parser
from daemon_harness import (
    EventWatch,
    PtySim,
    cartd_cli,
    daemon_in_process,
    load_test_config,
    start_sim,
    write_config,
)

from cartd import events as ev
from cartd.sim.target import Scenario

SCENARIO = Scenario(
    print_interval=None,
    module_interval=None,
    bugcheck_after=0.5,
    bugcheck_code=0x9F,
    bugcheck_parameters=(0x3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0),
)
DUMP_PATH = re.compile(r"^cartd: writing (?P<path>/\S+\.dmp)$", re.MULTILINE)


@dataclass
class _Held:
    sim: PtySim
    watch: EventWatch
    target: str
    cli: tuple[str, ...]  # the arguments that reach this daemon
    dumps: Path


@asynccontextmanager
async def _held_at_a_bugcheck(tmp_path: Path, *, baud: int | None) -> AsyncIterator[_Held]:
    sim = start_sim(SCENARIO, seed=3, baud=baud)
    state = tmp_path / "s"
    config_path = write_config(tmp_path / "c.toml", ports=[sim.slave_path])
    with config_path.open("a") as config_file:
        config_file.write('[policy]\ndump_on_bugcheck = "none"\n')
    config = load_test_config(config_path, state)
    assert config.policy.dump_on_bugcheck == "none"
    target = "pts-" + sim.slave_path.rsplit("/", 1)[1]
    try:
        async with daemon_in_process(config) as daemon:
            watch = await EventWatch.start(daemon.socket_path, daemon.stderr)
            try:
                await watch.wait_type(
                    ev.Stopped, target, timeout=30, where=lambda e: e.reason == "bugcheck_first"
                )
                yield _Held(
                    sim,
                    watch,
                    target,
                    ("--state-dir", str(state)),
                    state / "targets" / target / "dumps",
                )
                assert watch.dropped == 0
            finally:
                await watch.close()
    finally:
        sim.close()


async def test_dump_triage_wait_writes_the_dump_and_prints_its_path(tmp_path: Path) -> None:
    # Unpaced (baud=None): the triage dump takes a fraction of a second instead of a minute.
    async with _held_at_a_bugcheck(tmp_path, baud=None) as held:
        assert not held.dumps.exists()  # the policy wrote nothing at the bugcheck
        result = await cartd_cli("dump", held.target, "--triage", "--wait", *held.cli)
        assert result.returncode == 0, result
        assert f"cartd: a triage dump of {held.target}: " in result.stderr, result
        match = DUMP_PATH.search(result.stderr)
        assert match is not None, result
        path = Path(match["path"])
        assert path.parent == held.dumps and "-0x9f-triage-" in path.name
        assert f"cartd: dump written: {path} (bitmap, " in result.stderr, result
        assert sorted(held.dumps.iterdir()) == [path]
        assert kdmp_parser.KernelDumpParser(path).type == kdmp_parser.DumpType.BMPDump
        _, written = await held.watch.wait_type(ev.DumpWritten, held.target)
        assert written.path == str(path) and written.size == path.stat().st_size
        # The dump was asked for: the target stays held.
        (record,) = (await held.watch.client.call("status"))["targets"]
        assert record["state"] == "bugchecked" and record["dump"] is None


async def test_a_long_full_dump_needs_yes_and_can_be_cancelled(tmp_path: Path) -> None:
    # Paced like a 115200 baud cable, where a full dump of the 1 GiB machine takes a day.
    async with _held_at_a_bugcheck(tmp_path, baud=115200) as held:
        target = held.target
        refused = await cartd_cli("dump", target, "--full", *held.cli)
        assert refused.returncode == 1, refused
        assert f"cartd: a full dump of {target}: 262" in refused.stderr, refused
        assert " at this link's speed" in refused.stderr, refused
        assert "add --yes to start it anyway" in refused.stderr, refused
        assert refused.stderr.rstrip().endswith("cartd: not started"), refused
        assert not held.dumps.exists()
        assert not [e for e in held.watch.of(target) if isinstance(e, ev.DumpStarted)]

        started = await cartd_cli("dump", target, "--full", "--yes", *held.cli)
        assert started.returncode == 0, started
        match = DUMP_PATH.search(started.stderr)
        assert match is not None, started
        path = match["path"]
        assert "-0x9f-full-" in path
        at, dump_started = await held.watch.wait_type(ev.DumpStarted, target)
        assert (dump_started.path, dump_started.kind) == (path, "full")
        await held.watch.wait_type(ev.DumpProgress, target, after=at)

        cancelled = await cartd_cli("dump", target, "--cancel", *held.cli)
        assert cancelled.returncode == 0, cancelled
        assert cancelled.stderr == f"cartd: stopped {path}; what was read is kept\n", cancelled
        _, stopped = await held.watch.wait_type(ev.DumpStopped, target, after=at)
        assert stopped.path == path and stopped.resumable
        assert sorted(p.name for p in held.dumps.iterdir()) == [
            Path(path).name + ".partial",
            Path(path).name + ".progress",
        ]

        again = await cartd_cli("dump", target, "--cancel", *held.cli)
        assert again.returncode == 1, again
        assert f"{target}: no dump is being written" in again.stderr, again
