"""Event JSON: fields added later have defaults, so journals written before them still read."""

from __future__ import annotations

import json

from cartd.events import Bugcheck, LinkUp, event_from_json

TARGET = "usb-FTDI_FT232R-if00-port0"
PARAMETERS = (3, 0xFFFFA30F12345678, 0xFFFFF8057A2F3340, 0xFFFFA30F9ABCDEF0)
MEANINGS = (
    "Type of violation (3 = a device object blocked an IRP for too long)",
    "Physical device object of the stack",
    "nt!_TRIAGE_9F_POWER",
    "The blocked IRP",
)
CAUSE = "A device object blocked a power IRP for too long"


def test_a_bugcheck_line_from_before_meanings_and_cause_reads_with_defaults() -> None:
    # A journal line as cartd wrote it before `parameter_meanings` and `cause` existed.
    line = (
        '{"time":"2026-12-01T07:14:19.000001Z","type":"bugcheck","target":"' + TARGET + '",'
        '"code":"0x9f","name":"DRIVER_POWER_STATE_FAILURE","parameters":["0x3",'
        '"0xffffa30f12345678","0xfffff8057a2f3340","0xffffa30f9abcdef0"]}'
    )

    event = event_from_json(json.loads(line))

    assert event == Bugcheck(
        time="2026-12-01T07:14:19.000001Z",
        target=TARGET,
        code=0x9F,
        name="DRIVER_POWER_STATE_FAILURE",
        parameters=PARAMETERS,
    )
    assert isinstance(event, Bugcheck)
    assert (event.parameter_meanings, event.cause) == ((), "")


def test_meanings_and_cause_are_plain_json_and_read_back_as_written() -> None:
    written = Bugcheck(
        target=TARGET,
        code=0x9F,
        name="DRIVER_POWER_STATE_FAILURE",
        parameters=PARAMETERS,
        parameter_meanings=MEANINGS,
        cause=CAUSE,
    )

    data = json.loads(json.dumps(written.to_json()))

    assert data == written.to_json()  # to_json() is already what JSON readers see
    # Texts, not hex: only the parameters themselves are numbers written as strings.
    assert data["parameter_meanings"] == list(MEANINGS)
    assert data["cause"] == CAUSE
    assert data["parameters"][1] == "0xffffa30f12345678"
    read = event_from_json(data)
    assert read == written
    assert isinstance(read, Bugcheck)
    assert isinstance(read.parameters, tuple) and isinstance(read.parameter_meanings, tuple)


def test_a_newer_writers_extra_fields_are_ignored() -> None:
    data = LinkUp(link="serial:/dev/ttyUSB0", device="/dev/ttyUSB0", baud=115200).to_json()
    read = event_from_json({**data, "from_the_future": [1, 2]})
    assert read == event_from_json(data)
