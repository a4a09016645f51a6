"""The TUI's model, without Textual: what it makes of status answers and events."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cartd import events as ev
from cartd.tui.model import (
    CartModel,
    LineLog,
    LinkInfo,
    TargetInfo,
    Tone,
    display_state,
    noise_summary,
    since,
    size,
)

T = "2026-12-01T03:14:0{}.000000Z"


def test_prints_become_lines_whatever_their_newlines() -> None:
    log = LineLog(100)
    log.add_text(T.format(1), "one\ntwo\n", "debug_print")
    log.add_text(T.format(2), "three, ", "debug_print")  # DbgPrint mid-line
    log.add_text(T.format(3), "continued\r\nfour\n", "debug_print")
    log.add_text(T.format(4), "\n", "debug_print")  # an empty line is a line
    assert [line.text for line in log.lines] == ["one", "two", "three, continued", "four", ""]
    assert log.lines[2].time == T.format(2), "a continued line keeps the time it started"


def test_a_full_log_drops_the_oldest_and_counts_them() -> None:
    log = LineLog(3)
    for number in range(5):
        log.add_text(T.format(number), f"line {number}\n", "debug_print")
    assert [line.text for line in log.lines] == ["line 2", "line 3", "line 4"]
    assert log.dropped == 2


def test_replayed_events_after_a_reconnect_are_not_shown_twice() -> None:
    model = CartModel(socket="/run/cartd/control.sock")
    first = ev.DebugPrint(time=T.format(1), target="t", text="a\n")
    same_time = ev.DebugPrint(time=T.format(1), target="t", text="b\n")
    later = ev.DebugPrint(time=T.format(2), target="t", text="c\n")
    for event in (first, same_time, later):
        model.apply_event(event)
    # The daemon replays its recent events to the new connection; one new event follows.
    for event in (first, same_time, later, ev.DebugPrint(time=T.format(3), target="t", text="d\n")):
        model.apply_event(event)
    assert [line.text for line in model.target("t").console.lines] == ["a", "b", "c", "d"]


def test_events_move_the_state_and_fill_the_timeline() -> None:
    model = CartModel(socket="s")
    bugcheck = ev.Bugcheck(
        time=T.format(3),
        target="t",
        code=0x9F,
        name="DRIVER_POWER_STATE_FAILURE",
        parameters=(3, 4, 5, 6),
    )
    model.apply_event(ev.Running(time=T.format(1), target="t"))
    assert model.target("t").state == "running"
    model.apply_event(
        ev.Stopped(
            time=T.format(2),
            target="t",
            reason="bugcheck_first",
            processor=0,
            pc=1,
            exception_code=0x80000003,
            first_chance=True,
        )
    )
    model.apply_event(bugcheck)
    target = model.target("t")
    assert (target.state, target.bugcheck) == ("bugchecked", bugcheck)
    model.apply_event(ev.TargetRebooted(time=T.format(4), target="t"))
    assert (target.state, target.bugcheck) == ("rebooting", None)
    assert [line.kind for line in target.timeline.lines] == [
        "running",
        "stopped",
        "bugcheck",
        "target_rebooted",
    ]


def test_states_have_words_not_only_colours() -> None:
    serial = LinkInfo(link="serial:/dev/ttyUSB0", device="/dev/ttyUSB0", target="u", state="x")
    keyless = LinkInfo(
        link="kdnet:50001", device="udp", target="k", state="waiting for a key", kind="kdnet"
    )
    assert display_state(None, keyless).word == "key needed"
    assert display_state(None, serial).word == "waiting for target"
    probing = LinkInfo(link="l", device="d", target="u", state="probing")
    assert display_state(None, probing).word == "connecting"
    bugchecked = TargetInfo("u", state="bugchecked")
    assert display_state(bugchecked, serial).word == "BUGCHECKED"
    assert display_state(bugchecked, serial).tone is Tone.BAD
    remote = TargetInfo("u", state="stopped", owner="alice@10.0.0.7")
    assert display_state(remote, serial).word == "owned remotely (alice@10.0.0.7)"
    assert display_state(TargetInfo("u", state="link_down"), serial).word == "link down"


def test_numbers_for_people() -> None:
    assert since(None, 100.0) == "never"
    assert since(96.0, 100.0) == "4 s ago"
    assert since(100.0 - 600, 100.0) == "10 min ago"
    assert since(100.0 - 3 * 86400, 100.0) == "3 days ago"
    assert size(512) == "512 bytes"
    assert size(3_481_600) == "3.3 MiB"
    assert size(None) == "?"
    assert noise_summary({}) == "no line noise"
    noise = {"bad_checksum": 2, "garbage": 17}
    assert noise_summary(noise) == "line noise 19 (garbage 17)"
    assert noise_summary(noise, every_kind=True) == "line noise 19 (garbage 17, bad checksum 2)"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(
    st.dictionaries(
        st.sampled_from(["links", "targets", "state_dir", "disk_free_bytes", "other"]), _json
    ),
    st.lists(
        st.fixed_dictionaries(
            {
                "target": st.text(max_size=4),
                "state": _json,
                "identity": _json,
                "noise": _json,
                "bugcheck": _json,
                "last_traffic": _json,
                "records_bytes": _json,
            }
        ),
        max_size=3,
    ),
)
def test_a_status_of_any_shape_never_breaks_the_model(
    status: dict[str, Any], targets: list[dict[str, Any]]
) -> None:
    """A newer (or broken) daemon may answer with anything: the TUI shows what it can."""
    model = CartModel(socket="s")
    model.apply_status(status)
    model.apply_status({**status, "targets": targets})
    for slot in model.slots():
        assert slot.state.word


def test_only_bugchecks_since_the_tui_started_are_announced() -> None:
    model = CartModel(socket="s", live_since=T.format(5))
    for second in (3, 7):
        model.apply_event(
            ev.Bugcheck(
                time=T.format(second), target="t", code=0x9F, name="X", parameters=(0, 0, 0, 0)
            )
        )
    assert [alert.time for alert in model.alerts] == [T.format(7)]
