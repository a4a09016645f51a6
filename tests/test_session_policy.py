"""The daemon's policy for one target: what each stop means and what to do about it."""

from __future__ import annotations

import pytest

from cartd import events as ev
from cartd.config import Policy
from cartd.kd import events as kd
from cartd.kd.bugcheck_codes import BugcheckInfo
from cartd.kd.constants import NewState, NtStatus
from cartd.kd.manipulate import GetVersion
from cartd.kd.state_change import ExceptionRecord, LoadSymbols, StateChangeMessage
from cartd.kd.stops import StopReason
from cartd.session.policy import (
    CommandRefused,
    HoldTarget,
    RebootTarget,
    ResumeTarget,
    TargetSession,
    TargetState,
)

PC = 0xFFFFF80226401000
PARAMETERS = (3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0)


def policy(**overrides: object) -> Policy:
    values: dict[str, object] = {
        "on_bugcheck": "hold",
        "break_on_connect": False,
        "prompt_answer": "",
    }
    values.update(overrides)
    return Policy(**values)  # type: ignore[arg-type]


def exception_stop(
    reason: StopReason, *, code: int = NtStatus.BREAKPOINT, bugcheck: BugcheckInfo | None = None
) -> kd.StateChanged:
    message = StateChangeMessage(
        new_state=NewState.EXCEPTION,
        processor=1,
        number_processors=2,
        program_counter=PC,
        body=ExceptionRecord(code=code, address=PC, first_chance=True),
    )
    return kd.StateChanged(message=message, reason=reason, first_chance=True, bugcheck=bugcheck)


def module_stop(path: str, *, unload: bool = False) -> kd.StateChanged:
    body = LoadSymbols.for_image(
        path, base_of_dll=0xFFFFF80227010000, size_of_image=0x7000, unload=unload
    )
    message = StateChangeMessage(new_state=NewState.LOAD_SYMBOLS, body=body)
    reason = StopReason.MODULE_UNLOAD if unload else StopReason.MODULE_LOAD
    return kd.StateChanged(message=message, reason=reason, first_chance=True)


def test_module_loads_are_journaled_and_continued() -> None:
    session = TargetSession("srv12", "serial:/dev/ttyUSB0", policy())
    events, decision = session.on_stop(module_stop("\\SystemRoot\\System32\\drivers\\Ntfs.sys"))
    assert decision == ResumeTarget()
    (loaded,) = events
    assert isinstance(loaded, ev.ModuleLoaded)
    assert (loaded.name, loaded.base, loaded.size) == ("Ntfs.sys", 0xFFFFF80227010000, 0x7000)
    assert loaded.to_json()["base"] == "0xfffff80227010000"
    # A continued module load is not a "stop" a human cares about: no `running` event.
    assert session.on_host_event(kd.TargetRunning(), wall_time=1.0) == []


def test_bugcheck_is_held_by_default_and_reported_once() -> None:
    session = TargetSession("srv12", "serial:/dev/ttyUSB0", policy())
    info = BugcheckInfo(code=0x9F, parameters=PARAMETERS)
    events, decision = session.on_stop(exception_stop(StopReason.BUGCHECK_FIRST, bugcheck=info))
    assert isinstance(decision, HoldTarget)
    assert session.state is TargetState.BUGCHECKED
    stopped, bugcheck = events
    assert isinstance(stopped, ev.Stopped) and stopped.reason == "bugcheck_first"
    assert isinstance(bugcheck, ev.Bugcheck)
    assert bugcheck.to_json()["name"] == "DRIVER_POWER_STATE_FAILURE"
    assert bugcheck.to_json()["parameters"][1] == "0xffffa30f12345678"
    # What the reference says about it, for people at the cart (parameter 1 is 3 here).
    assert bugcheck.parameter_meanings == info.parameter_meanings
    assert bugcheck.parameter_meanings[0].startswith("Type of violation (3 = ")
    assert bugcheck.cause == "A device object blocked a power IRP for too long"
    session.on_host_event(kd.TargetRunning(), wall_time=2.0)
    events, _ = session.on_stop(exception_stop(StopReason.BUGCHECK_SECOND, bugcheck=info))
    assert [type(e) for e in events] == [ev.Stopped]  # the same bugcheck is not repeated


def test_a_bugcheck_the_reference_does_not_describe_has_no_meanings_or_cause() -> None:
    session = TargetSession("srv12", "l", policy())
    info = BugcheckInfo(code=0x1234, parameters=(1, 2, 3, 4))
    assert info.parameter_meanings is None and info.cause is None
    events, _ = session.on_stop(exception_stop(StopReason.BUGCHECK_FIRST, bugcheck=info))
    (bugcheck,) = [event for event in events if isinstance(event, ev.Bugcheck)]
    assert (bugcheck.parameter_meanings, bugcheck.cause) == ((), "")


@pytest.mark.parametrize(
    ("setting", "expected"), [("continue", ResumeTarget()), ("reboot", RebootTarget())]
)
def test_bugcheck_policy_can_continue_or_reboot(setting: str, expected: object) -> None:
    session = TargetSession("srv12", "l", policy(on_bugcheck=setting))
    info = BugcheckInfo(code=0xE2, parameters=(0, 0, 0, 0))
    _, decision = session.on_stop(exception_stop(StopReason.BUGCHECK_FIRST, bugcheck=info))
    assert decision == expected


def test_breakpoints_and_exceptions_keep_the_target_alive() -> None:
    session = TargetSession("srv12", "l", policy())
    for reason, code in [
        (StopReason.BREAKPOINT, NtStatus.BREAKPOINT),
        (StopReason.EXCEPTION, NtStatus.ACCESS_VIOLATION),
        (StopReason.BREAK_IN, NtStatus.BREAKPOINT),
    ]:
        events, decision = session.on_stop(exception_stop(reason, code=code))
        assert decision == ResumeTarget(), reason
        assert isinstance(events[0], ev.Stopped)
        (running,) = session.on_host_event(kd.TargetRunning(), wall_time=1.0)
        assert isinstance(running, ev.Running) and running.target == "srv12"
        assert session.state is TargetState.RUNNING


def test_a_break_in_asked_for_by_a_human_is_held() -> None:
    session = TargetSession("srv12", "l", policy())
    session.on_host_event(kd.DebugPrint(data=b"hello\n", processor=0), wall_time=1.0)
    assert session.state is TargetState.RUNNING
    session.check_break()
    _, decision = session.on_stop(exception_stop(StopReason.BREAK_IN))
    assert isinstance(decision, HoldTarget)
    with pytest.raises(CommandRefused, match="already stopped"):
        session.check_break()
    session.check_go()


def test_go_needs_a_stopped_target_and_reboot_breaks_in_first() -> None:
    session = TargetSession("srv12", "l", policy())
    session.on_host_event(kd.DebugPrint(data=b"x\n", processor=0), wall_time=1.0)
    with pytest.raises(CommandRefused) as refused:
        session.check_go()
    assert refused.value.code == "not_stopped"
    assert session.check_reboot() is False
    _, decision = session.on_stop(exception_stop(StopReason.BREAK_IN))
    assert decision == RebootTarget()


def test_reboot_forgets_identity_and_running_follows_a_reported_stop() -> None:
    session = TargetSession("srv12", "serial:/dev/ttyUSB0", policy())
    version = GetVersion(minor_version=22621, machine_type=0x8664, kern_base=0xFFFFF80226400000)
    event, identity = session.learn_identity(version, None, processors=4)
    assert isinstance(event, ev.TargetConnected)
    assert event.to_json()["kernel_base"] == "0xfffff80226400000"
    assert identity["machine"] == "x64" and identity["build"] == 22621
    session.on_stop(exception_stop(StopReason.BREAKPOINT))
    (running,) = session.on_host_event(kd.TargetRunning(), wall_time=3.0)
    assert isinstance(running, ev.Running)
    (rebooted,) = session.on_host_event(kd.TargetRebooted(), wall_time=4.0)
    assert isinstance(rebooted, ev.TargetRebooted)
    assert session.identity is None and session.state is TargetState.REBOOTING


def test_noise_is_reported_as_running_totals_only_when_it_changes() -> None:
    session = TargetSession("srv12", "serial:/dev/ttyUSB0", policy())
    assert session.take_noise_event() is None
    session.on_host_event(kd.ProtocolNoise(kind="bad_checksum", count=1), wall_time=1.0)
    session.on_host_event(kd.ProtocolNoise(kind="garbage", count=40), wall_time=1.0)
    noise = session.take_noise_event()
    assert noise is not None and noise.counters == {"bad_checksum": 1, "garbage": 40}
    assert noise.link == "serial:/dev/ttyUSB0"
    assert session.take_noise_event() is None


def test_link_down_refuses_commands() -> None:
    session = TargetSession("srv12", "l", policy())
    session.link_down()
    with pytest.raises(CommandRefused, match="link is down"):
        session.check_break()
