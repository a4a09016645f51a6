"""The config file (cartd.config): defaults, overrides, per-target policy, the socket path, and a
message naming file, line and key for every kind of mistake."""

from __future__ import annotations

import dataclasses
import re
import textwrap
import tomllib
from pathlib import Path

import pytest

from cartd import config
from cartd.config import (
    CaptureConfig,
    Config,
    ConfigError,
    KdnetConfig,
    Policy,
    RelayConfig,
    SerialConfig,
    UsbConfig,
    load_config,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "cartd.toml.example"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cartd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def assert_problem(path: Path, line: int, key: str | None, problem: str) -> None:
    """Loading ``path`` fails with exactly this message, and the parts are on the error too."""
    error = load_error(path)
    assert (error.path, error.line, error.key, error.problem) == (path, line, key, problem)
    where = f"{path}:{line}"
    assert str(error) == (f"{where}: {problem}" if key is None else f"{where}: {key}: {problem}")


def uncommented(text: str) -> str:
    """The example with every setting switched on: `# key = value` and `# [table]` lines lose
    their '# '; explanations keep theirs."""
    return re.sub(r"(?m)^# (?=\[|[a-z_]+ = )", "", text)


# --- Loading -------------------------------------------------------------------------------------


def test_no_file_at_the_default_path_gives_all_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    loaded = load_config(None)
    assert loaded == Config()
    assert loaded.source is None
    assert loaded.state_dir == Path("/var/lib/cartd")
    assert loaded.control_socket is None
    assert loaded.control_group == "cartd"
    assert loaded.replay_events == 200
    assert loaded.serial == SerialConfig(
        ports="auto",
        baud_rates=(115200, 57600, 38400, 19200, 9600),
        active_probe=(),
        probe_seconds=3.0,
        rescan_seconds=2.0,
    )
    assert loaded.policy == Policy(on_bugcheck="hold", break_on_connect=False, prompt_answer="")
    assert loaded.targets == {}
    assert loaded.capture == CaptureConfig(quota_mb=1024, fsync_interval=1.0, wire_capture=True)


def test_a_file_at_the_default_path_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "replay_events = 5\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", path)
    loaded = load_config(None)
    assert loaded.replay_events == 5
    assert loaded.source == path


def test_an_empty_file_gives_defaults_and_names_its_source(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load_config(path) == Config(source=path)


def test_every_setting_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        textwrap.dedent("""\
        state_dir = "/srv/cartd"
        control_socket = "/run/cart/ctl.sock"
        control_group = "oncall"
        replay_events = 0

        [serial]
        ports = ["/dev/ttyS0", "/dev/serial/by-id/usb-FTDI_FT232R_A1B2C3-if00-port0"]
        baud_rates = [9600, 115200]
        active_probe = "all"
        probe_seconds = 10
        rescan_seconds = 0.5

        [policy]
        on_bugcheck = "continue"
        break_on_connect = true
        prompt_answer = "i"

        [capture]
        quota_mb = 20000
        fsync_interval = 0.25
        wire_capture = false
        """),
    )
    assert load_config(path) == Config(
        state_dir=Path("/srv/cartd"),
        control_socket=Path("/run/cart/ctl.sock"),
        control_group="oncall",
        replay_events=0,
        serial=SerialConfig(
            ports=("/dev/ttyS0", "/dev/serial/by-id/usb-FTDI_FT232R_A1B2C3-if00-port0"),
            baud_rates=(9600, 115200),
            active_probe="all",
            probe_seconds=10.0,
            rescan_seconds=0.5,
        ),
        policy=Policy(on_bugcheck="continue", break_on_connect=True, prompt_answer="i"),
        capture=CaptureConfig(quota_mb=20000, fsync_interval=0.25, wire_capture=False),
        source=path,
    )


def test_whole_seconds_may_be_written_as_integers(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, "[serial]\nprobe_seconds = 5\n"))
    assert loaded.serial.probe_seconds == 5.0
    assert isinstance(loaded.serial.probe_seconds, float)


def test_a_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "cartd.toml"
    path.write_bytes(b"\xef\xbb\xbfreplay_events = 7\n")
    assert load_config(path).replay_events == 7


def test_state_dir_override_replaces_the_file_and_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'state_dir = "/srv/cartd"\nreplay_events = 9\n')
    loaded = load_config(path, state_dir_override=tmp_path / "state")
    assert loaded.state_dir == tmp_path / "state"
    assert loaded.replay_events == 9
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert load_config(None, state_dir_override=Path("/tmp/demo")) == Config(
        state_dir=Path("/tmp/demo"), state_dir_given=True
    )


def test_a_relative_state_dir_override_is_taken_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_config(write(tmp_path, ""), state_dir_override=Path("demo"))
    assert loaded.state_dir == tmp_path / "demo"


# --- Per-target policy ---------------------------------------------------------------------------


def test_targets_inherit_every_key_they_leave_out_from_policy(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[policy]\non_bugcheck = "continue"\nprompt_answer = "b"\n\n'
        '[targets."db-07.lab"]\nbreak_on_connect = true\n\n'
        '[targets.web_3]\non_bugcheck = "reboot"\nprompt_answer = ""\n',
    )
    loaded = load_config(path)
    assert loaded.policy_for("db-07.lab") == Policy(
        on_bugcheck="continue", break_on_connect=True, prompt_answer="b"
    )
    assert loaded.policy_for("web_3") == Policy(
        on_bugcheck="reboot", break_on_connect=False, prompt_answer=""
    )
    assert loaded.policy_for("somebody-else") == loaded.policy


def test_targets_inherit_the_defaults_when_there_is_no_policy_table(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, '[targets.a]\nprompt_answer = "i"\n'))
    assert loaded.policy_for("a") == Policy(prompt_answer="i")


# --- The control socket --------------------------------------------------------------------------


def test_a_configured_control_socket_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/cartd")
    configured = Config(control_socket=Path("/srv/cartd.sock"))
    assert configured.control_socket_path() == Path("/srv/cartd.sock")


def test_the_control_socket_goes_in_systemds_runtime_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/cartd")
    assert Config().control_socket_path() == Path("/run/cartd/control.sock")
    # A unit with several RuntimeDirectory= entries gets them all, joined by ':'.
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/cartd:/run/cartd-extra")
    assert Config().control_socket_path() == Path("/run/cartd/control.sock")


def test_outside_the_service_clients_look_in_run_cartd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    assert Config().control_socket_path() == Path("/run/cartd/control.sock")


def test_a_state_dir_given_on_the_command_line_holds_the_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    loaded = load_config(write(tmp_path, ""), state_dir_override=tmp_path)
    assert loaded.control_socket_path() == tmp_path / "control.sock"


# --- The example file ----------------------------------------------------------------------------


def test_the_example_loads_and_changes_nothing() -> None:
    assert load_config(EXAMPLE) == Config(source=EXAMPLE)


def test_the_example_with_every_setting_switched_on_loads_at_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, uncommented(EXAMPLE.read_text(encoding="utf-8")))
    loaded = load_config(path)
    # Everything is at its default except the two settings that have no written-out default.
    assert loaded.control_socket == Path("/run/cartd/control.sock")
    assert set(loaded.targets) == {"TARGET-ID"}
    assert dataclasses.replace(loaded, control_socket=None, targets={}) == Config(source=path)


def test_the_example_documents_every_setting() -> None:
    document = tomllib.loads(uncommented(EXAMPLE.read_text(encoding="utf-8")))
    sections = {
        "serial": SerialConfig,
        "policy": Policy,
        "capture": CaptureConfig,
        "kdnet": KdnetConfig,
        "usb": UsbConfig,
        "relay": RelayConfig,
    }
    top_level = {setting.name for setting in dataclasses.fields(Config)} - {
        *sections,
        "targets",
        "source",  # where the settings came from, not a setting
        "state_dir_given",  # whether --state-dir was used, not a setting
    }
    assert set(document) == top_level | set(sections) | {"targets"}
    for name, settings in sections.items():
        assert set(document[name]) == {setting.name for setting in dataclasses.fields(settings)}


# --- Malformed files: one message each, naming file, line and key -------------------------------

MALFORMED = [
    pytest.param(
        '[capture]\ntriage_tiers = ["core", "stacks"]\n',
        2,
        "capture.triage_tiers",
        "expected a list of 'core', 'kernel images', 'module list', 'dbgprint buffer', "
        "'processes', 'module debug info', 'kernel unwind data', 'kernel sections', got 'stacks'",
        id="unknown-triage-tier",
    ),
    pytest.param(
        '[policy]\ndump_on_bugcheck = "always"\n',
        2,
        "policy.dump_on_bugcheck",
        "expected 'auto', 'triage', 'full' or 'none', got 'always'",
        id="unknown-dump-policy",
    ),
    # TOML syntax (tomllib's position, our wording; no key to name).
    pytest.param(
        'replay_events = 1\n[serial]\nports = = "auto"\n',
        3,
        None,
        "not valid TOML: invalid value (column 9)",
        id="bad-toml",
    ),
    pytest.param(
        "replay_events = 1\n[serial]\nbaud_rates = [115200,\n",
        3,
        None,
        "not valid TOML: invalid value (at the end of the file)",
        id="bad-toml-at-end",
    ),
    pytest.param(
        "[serial]\nprobe_seconds = 1\n\n[serial]\n",
        4,
        None,
        "not valid TOML: cannot declare ('serial',) twice (column 8)",
        id="table-twice",
    ),
    # Wrong types.
    pytest.param(
        '[serial]\nbaud_rates = "fast"\n',
        2,
        "serial.baud_rates",
        "expected a list of positive integers, got 'fast'",
        id="baud-rates-not-a-list",
    ),
    pytest.param(
        "[serial]\nbaud_rates = [115200, 9600.0]\n",
        2,
        "serial.baud_rates",
        "expected a list of positive integers, got 9600.0",
        id="baud-rate-float",
    ),
    pytest.param(
        "[serial]\nbaud_rates = [true]\n",
        2,
        "serial.baud_rates",
        "expected a list of positive integers, got true",
        id="baud-rate-bool",
    ),
    pytest.param(
        "replay_events = true\n",
        1,
        "replay_events",
        "expected an integer from 0 to 100000, got true",
        id="bool-is-not-an-integer",
    ),
    pytest.param(
        "\n[capture]\nquota_mb = 1024.0\n",
        3,
        "capture.quota_mb",
        "expected an integer of at least 1, got 1024.0",
        id="whole-float-is-not-an-integer",
    ),
    pytest.param(
        '[policy]\nbreak_on_connect = "yes"\n',
        2,
        "policy.break_on_connect",
        "expected true or false, got 'yes'",
        id="not-a-bool",
    ),
    pytest.param(
        '[policy]\non_bugcheck = "stop"\n',
        2,
        "policy.on_bugcheck",
        "expected 'hold', 'continue' or 'reboot', got 'stop'",
        id="not-a-choice",
    ),
    pytest.param(
        "[policy]\nprompt_answer = 1\n",
        2,
        "policy.prompt_answer",
        "expected a string, got 1",
        id="not-a-string",
    ),
    pytest.param(
        '[serial]\nprobe_seconds = "3s"\n',
        2,
        "serial.probe_seconds",
        "expected a positive number of seconds, got '3s'",
        id="seconds-not-a-number",
    ),
    pytest.param(
        'control_group = ""\n',
        1,
        "control_group",
        "expected a group name, got ''",
        id="empty-group",
    ),
    pytest.param(
        "serial = 5\n",
        1,
        "serial",
        "expected a table, got 5",
        id="section-not-a-table",
    ),
    pytest.param(
        '[[policy]]\non_bugcheck = "hold"\n',
        1,
        "policy",
        "expected a table, got a list",
        id="array-of-tables",
    ),
    pytest.param(
        'targets = "all"\n',
        1,
        "targets",
        "expected a table, got 'all'",
        id="targets-not-a-table",
    ),
    pytest.param(
        '[targets]\ndb-07 = "hold"\n',
        2,
        "targets.db-07",
        "expected a table, got 'hold'",
        id="target-not-a-table",
    ),
    pytest.param(
        "[capture]\nwire_capture = 2024-01-01\n",
        2,
        "capture.wire_capture",
        "expected true or false, got a date or time",
        id="date",
    ),
    # Out of range.
    pytest.param(
        "[serial]\nbaud_rates = [115200, 5000000]\n",
        2,
        "serial.baud_rates",
        "expected baud rates from 50 to 4000000, got 5000000",
        id="baud-rate-too-high",
    ),
    pytest.param(
        "[serial]\nbaud_rates = [0]\n",
        2,
        "serial.baud_rates",
        "expected baud rates from 50 to 4000000, got 0",
        id="baud-rate-zero",
    ),
    pytest.param(
        "[serial]\nbaud_rates = []\n",
        2,
        "serial.baud_rates",
        "expected at least one baud rate, got an empty list",
        id="no-baud-rates",
    ),
    pytest.param(
        "[serial]\nbaud_rates = [115200, 9600, 115200]\n",
        2,
        "serial.baud_rates",
        "115200 is listed twice",
        id="baud-rate-twice",
    ),
    pytest.param(
        "[serial]\nprobe_seconds = 0\n",
        2,
        "serial.probe_seconds",
        "expected a positive number of seconds, got 0",
        id="probe-seconds-zero",
    ),
    pytest.param(
        "[serial]\nrescan_seconds = -1.5\n",
        2,
        "serial.rescan_seconds",
        "expected a positive number of seconds, got -1.5",
        id="rescan-seconds-negative",
    ),
    pytest.param(
        "[capture]\nfsync_interval = inf\n",
        2,
        "capture.fsync_interval",
        "expected a positive number of seconds, got inf",
        id="seconds-infinite",
    ),
    pytest.param(
        "[capture]\nquota_mb = 0\n",
        2,
        "capture.quota_mb",
        "expected an integer of at least 1, got 0",
        id="quota-zero",
    ),
    pytest.param(
        "replay_events = 100001\n",
        1,
        "replay_events",
        "expected an integer from 0 to 100000, got 100001",
        id="replay-too-many",
    ),
    pytest.param(
        "replay_events = -1\n",
        1,
        "replay_events",
        "expected an integer from 0 to 100000, got -1",
        id="replay-negative",
    ),
    # Unknown keys and sections.
    pytest.param(
        "[serial]\nbaudrate = 9600\n",
        2,
        "serial.baudrate",
        "unknown key 'baudrate' (did you mean 'baud_rates'?)",
        id="unknown-key-close-to-a-known-one",
    ),
    pytest.param(
        "[capture]\ncompression = true\n",
        2,
        "capture.compression",
        "unknown key 'compression'",
        id="unknown-key",
    ),
    pytest.param(
        "[serail]\nports = 'auto'\n",
        1,
        "serail",
        "unknown section 'serail' (did you mean 'serial'?)",
        id="unknown-section",
    ),
    pytest.param(
        "[printer]\nport = 50000\n",
        1,
        "printer",
        "unknown section 'printer'",
        id="unknown-section-far-from-any",
    ),
    pytest.param(
        "statedir = '/srv/cartd'\n",
        1,
        "statedir",
        "unknown key 'statedir' (did you mean 'state_dir'?)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "[capture]\nquota_mb = 10\nstate_dir = '/srv/cartd'\n",
        3,
        "capture.state_dir",
        "unknown key 'state_dir' (top-level keys must come before the first [section])",
        id="top-level-key-after-a-section",
    ),
    pytest.param(
        "[policy]\nprobe_seconds = 5\n",
        2,
        "policy.probe_seconds",
        "unknown key 'probe_seconds' (it belongs in [serial])",
        id="key-in-the-wrong-section",
    ),
    pytest.param(
        '[targets."db-07"]\non_bugcheck = "hold"\nwire_capture = false\n',
        3,
        "targets.db-07.wire_capture",
        "unknown key 'wire_capture' (it belongs in [capture])",
        id="unknown-key-in-a-target",
    ),
    # Bad paths and names.
    pytest.param(
        'state_dir = "var/lib/cartd"\n',
        1,
        "state_dir",
        "expected an absolute path, got 'var/lib/cartd'",
        id="relative-state-dir",
    ),
    pytest.param(
        "state_dir = 7\n",
        1,
        "state_dir",
        "expected an absolute path, got 7",
        id="state-dir-not-a-string",
    ),
    pytest.param(
        'control_socket = "control.sock"\n',
        1,
        "control_socket",
        "expected an absolute path, got 'control.sock'",
        id="relative-control-socket",
    ),
    pytest.param(
        f'control_socket = "/run/{"x" * 100}.sock"\n',
        1,
        "control_socket",
        "a Unix socket path has at most 107 bytes, this has 110",
        id="control-socket-too-long",
    ),
    pytest.param(
        '[serial]\nports = "ttyUSB0"\n',
        2,
        "serial.ports",
        "expected 'auto' or a list of device paths under /dev/, got 'ttyUSB0'",
        id="ports-neither-auto-nor-a-list",
    ),
    pytest.param(
        '[serial]\nports = ["/dev/ttyS0", "/tmp/ttyS1"]\n',
        2,
        "serial.ports",
        "expected 'auto' or a list of device paths under /dev/, got '/tmp/ttyS1'",
        id="port-outside-dev",
    ),
    pytest.param(
        '[serial]\nports = ["/dev/../etc/passwd"]\n',
        2,
        "serial.ports",
        "expected 'auto' or a list of device paths under /dev/, got '/dev/../etc/passwd'",
        id="port-escaping-dev",
    ),
    pytest.param(
        '[serial]\nports = ["/dev/ttyS0", "/dev/ttyS0"]\n',
        2,
        "serial.ports",
        "'/dev/ttyS0' is listed twice",
        id="port-twice",
    ),
    pytest.param(
        '[serial]\nactive_probe = "auto"\n',
        2,
        "serial.active_probe",
        "expected 'all' or a list of device paths under /dev/, got 'auto'",
        id="active-probe-auto",
    ),
    pytest.param(
        '[serial]\nactive_probe = ["ttyUSB0"]\n',
        2,
        "serial.active_probe",
        "expected 'all' or a list of device paths under /dev/, got 'ttyUSB0'",
        id="active-probe-relative",
    ),
    pytest.param(
        '[targets."db 07"]\non_bugcheck = "hold"\n',
        1,
        'targets."db 07"',
        "expected a target id (1 to 64 letters, digits, '.', '_' or '-'), got 'db 07'",
        id="target-id-with-a-space",
    ),
    pytest.param(
        f'[targets.{"a" * 65}]\non_bugcheck = "hold"\n',
        1,
        f"targets.{'a' * 65}",
        f"expected a target id (1 to 64 letters, digits, '.', '_' or '-'), got '{'a' * 65}'",
        id="target-id-too-long",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "problem"), MALFORMED)
def test_malformed_file(
    tmp_path: Path, text: str, line: int, key: str | None, problem: str
) -> None:
    assert_problem(write(tmp_path, text), line, key, problem)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cartd.toml"
    path.write_bytes(b"replay_events = 1\n# caf\xe9\n")
    assert_problem(path, 2, None, "not UTF-8 text, which TOML requires")


def test_a_named_file_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    error = load_error(path)
    assert (error.path, error.line, error.key) == (path, None, None)
    assert str(error) == f"{path}: no such file"


def test_a_named_file_that_cannot_be_read(tmp_path: Path) -> None:
    error = load_error(tmp_path)  # a directory
    assert (error.path, error.line, error.key) == (tmp_path, None, None)
    assert str(error) == f"{tmp_path}: cannot read it: Is a directory"


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    assert isinstance(load_error(write(tmp_path, "x = 1\n")), ValueError)


# --- Finding the line of a key in tricky layouts -------------------------------------------------

LAYOUTS = [
    pytest.param(
        'replay_events = 1\nserial = { ports = "auto", baud_rates = "fast" }\n',
        2,
        "serial.baud_rates",
        id="inline-table",
    ),
    pytest.param(
        'state_dir = "/srv/cartd"\nserial.ports = "auto"\nserial.baud_rates = "fast"\n',
        3,
        "serial.baud_rates",
        id="dotted-keys-at-top-level",
    ),
    pytest.param(
        '# baud_rates = "fast"\n[serial]\n# baud_rates = [9600]\n  #baud_rates = 1\n'
        'ports = "auto"  # baud_rates = 2\nbaud_rates = "fast" # the real one\n',
        6,
        "serial.baud_rates",
        id="comments",
    ),
    pytest.param(
        '[policy]\non_bugcheck = "hold"\n\n[targets.a]\non_bugcheck = "explode"\n',
        5,
        "targets.a.on_bugcheck",
        id="same-key-in-an-earlier-table",
    ),
    pytest.param(
        '["serial"]\n"baud_rates" = "fast"\n',
        2,
        "serial.baud_rates",
        id="quoted-table-and-key",
    ),
    pytest.param(
        "[ targets . 'db.07' ]\non_bugcheck = 'hold'\n[ targets . \"db.08\" ]\non_bugcheck = 1\n",
        4,
        'targets."db.08".on_bugcheck',
        id="spaced-and-quoted-dotted-header",
    ),
    pytest.param(
        '[targets."db-\\u0030\\u0037"]\non_bugcheck = 1\n',
        2,
        "targets.db-07.on_bugcheck",
        id="escapes-in-a-table-name",
    ),
    pytest.param(
        "[targets]\ndb-07.on_bugcheck = 'hold'\ndb-08.on_bugcheck = 'stop'\n",
        3,
        "targets.db-08.on_bugcheck",
        id="dotted-keys-in-a-table",
    ),
    pytest.param(
        "replay_events = 1\ntargets.'db 07'.on_bugcheck = 'hold'\n",
        2,
        'targets."db 07"',
        id="table-made-by-a-dotted-key",
    ),
    pytest.param(
        '[policy]\nprompt_answer = """\n[serial]\nbaud_rates = [1]\n"""\n'
        "[serial]\nbaud_rates = [1]\n",
        7,
        "serial.baud_rates",
        id="header-inside-a-multiline-string",
    ),
    pytest.param(
        "[serial]\nbaud_rates = [\n  115200,\n  'fast',\n]\n",
        2,
        "serial.baud_rates",
        id="multiline-array",
    ),
    pytest.param(
        "[serial]\r\nports = 'auto'\r\nbaud_rates = 'fast'\r\n",
        3,
        "serial.baud_rates",
        id="crlf",
    ),
]


@pytest.mark.parametrize(("text", "line", "key"), LAYOUTS)
def test_the_line_of_a_key(tmp_path: Path, text: str, line: int, key: str) -> None:
    error = load_error(write(tmp_path, text))
    assert (error.line, error.key) == (line, key)
    assert str(error).startswith(f"{error.path}:{line}: {key}: ")


# --- KDNET -----------------------------------------------------------------------------------


def test_kdnet_ports_ranges_interface_and_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[kdnet]\nports = [50000, "50010-50012"]\ninterface = "10.0.0.2"\n'
        'keys = { 50000 = "1.2.3.4", "50010" = "ABC.DEF.1.2" }\n',
    )
    kdnet = load_config(path).kdnet
    assert kdnet.ports == (50000, 50010, 50011, 50012)
    assert kdnet.interface == "10.0.0.2"
    assert kdnet.keys == {50000: "1.2.3.4", 50010: "abc.def.1.2"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ports = [70000]", "expected a UDP port from 1 to 65535, got 70000"),
        ('ports = ["50000-60000"]', "'50000-60000' is not a range of at most 256 ports"),
        ('interface = "eth0"', "expected an IP address"),
        ('keys = { 50000 = "secret.word" }', "the key for port 50000 is not a KDNET key"),
    ],
)
def test_bad_kdnet_settings_are_refused_without_echoing_keys(
    tmp_path: Path, text: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, f"[kdnet]\n{text}\n"))
    assert problem in str(refused.value)
    assert refused.value.line == 2
    assert "secret" not in str(refused.value)
