"""deploy/install.sh: bash parses it, shellcheck finds nothing (where installed), and its
--dry-run output (each action it would take, one `+ command` line each) is what a fresh cart
needs, the same on every run, and --uninstall keeps the records and the config.

Nothing here changes the machine: every run is a dry run, which needs no root. What the dry run
prints for the user and the config depends on whether they exist on the machine running the
tests, so those checks follow that.
"""

from __future__ import annotations

import grp
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "install.sh"


def dry_run(*options: str) -> tuple[list[list[str]], str]:
    """(the actions as argument lists, the whole output) of `install.sh --dry-run OPTIONS`."""
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", *options],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    actions = [
        shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")
    ]
    return actions, result.stdout


def has(actions: list[list[str]], *words: str) -> bool:
    """Whether an action starts with these words."""
    return any(action[: len(words)] == list(words) for action in actions)


def test_bash_parses_it() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_finds_nothing() -> None:
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_is_executable_and_strict() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert "set -euo pipefail" in SCRIPT.read_text()


def test_install_actions() -> None:
    actions, output = dry_run()
    # Packages, in one apt-get install.
    installs = [action for action in actions if "install" in action and "apt-get" in action]
    assert len(installs) == 1
    assert {
        "python3-venv", "python3-dev", "gcc", "pkg-config", "libsystemd-dev", "iproute2", "udev",
    } <= set(installs[0])  # fmt: skip
    # The user: created as a system user with no login, or kept and put in dialout.
    try:
        grp.getgrnam("cartd")
    except KeyError:
        assert has(actions, "groupadd", "--system", "cartd")
    if subprocess.run(["id", "-u", "cartd"], capture_output=True).returncode == 0:
        assert has(actions, "usermod", "--append", "--groups", "dialout", "cartd")
    else:
        [useradd] = [action for action in actions if action[0] == "useradd"]
        assert useradd[-1] == "cartd" and "--system" in useradd
        for option, value in [
            ("--home-dir", "/var/lib/cartd"),
            ("--shell", "/usr/sbin/nologin"),
            ("--groups", "dialout"),
        ]:
            assert useradd[useradd.index(option) + 1] == value
    # The venv, when it is made, on Debian's Python: the service's user must be able to run it.
    for action in actions:
        if action[1:3] == ["-m", "venv"]:
            assert action == ["/usr/bin/python3", "-m", "venv", "/opt/cartd/venv"], action
    # The package from this checkout, with the systemd extra, in /opt/cartd/venv.
    [pip] = [action for action in actions if action[0] == "/opt/cartd/venv/bin/pip"]
    assert pip[1] == "install" and pip[-1].endswith("[systemd]")
    assert has(actions, "cp", "-r", f"{ROOT}/pyproject.toml", f"{ROOT}/README.md", f"{ROOT}/cartd")
    assert has(actions, "ln", "-sfn", "/opt/cartd/venv/bin/cartd", "/usr/local/bin/cartd")
    # The config: installed from the example only where there is none.
    config_copy = [action for action in actions if action[-1] == "/etc/cartd/cartd.toml"]
    if Path("/etc/cartd/cartd.toml").exists():
        assert config_copy == [] and "/etc/cartd/cartd.toml exists: kept" in output
    else:
        example = f"{ROOT}/deploy/cartd.toml.example"
        owner = ["-o", "root", "-g", "cartd"]
        assert config_copy == [["install", "-m", "0640", *owner, example, "/etc/cartd/cartd.toml"]]
    # Units and rules, then udev and systemd told about them, then the daemon started.
    for source, target in [
        ("deploy/cartd.service", "/etc/systemd/system/cartd.service"),
        ("deploy/cartd-tui@.service", "/etc/systemd/system/cartd-tui@.service"),
        ("udev/60-cartd.rules", "/etc/udev/rules.d/60-cartd.rules"),
    ]:
        assert ["install", "-m", "0644", f"{ROOT}/{source}", target] in actions
    assert has(actions, "udevadm", "control", "--reload")
    [trigger] = [action for action in actions if action[:2] == ["udevadm", "trigger"]]
    for subsystem in ("tty", "usb", "usb-serial"):
        assert f"--subsystem-match={subsystem}" in trigger
    order = [" ".join(action) for action in actions]
    assert (
        order.index("systemctl daemon-reload")
        < order.index("systemctl enable cartd.service")
        < order.index("systemctl restart cartd.service")
    )
    # No kiosk unless asked: it replaces the login prompt on tty1.
    assert not any("cartd-tui@tty1.service" in action for action in actions)
    # The summary says where to look.
    for hint in ("systemctl status cartd", "cartd status", "journalctl -u cartd"):
        assert hint in output
    assert "dry run: nothing was changed" in output


def test_install_twice_gives_the_same_actions() -> None:
    assert dry_run() == dry_run()
    assert dry_run("--kiosk") == dry_run("--kiosk")


def test_kiosk_enables_and_starts_the_tui_on_tty1() -> None:
    plain, _ = dry_run()
    kiosk, output = dry_run("--kiosk")
    added = [action for action in kiosk if action not in plain]
    assert added == [
        ["systemctl", "enable", "cartd-tui@tty1.service"],
        ["systemctl", "restart", "cartd-tui@tty1.service"],
    ]
    assert "the TUI on tty1" in output


def test_uninstall_removes_the_program_and_keeps_the_records() -> None:
    actions, output = dry_run("--uninstall")
    assert has(actions, "systemctl", "disable", "--now", "cartd.service")
    assert has(actions, "systemctl", "disable", "--now", "cartd-tui@tty1.service")
    [removed] = [action for action in actions if action[:2] == ["rm", "-f"] and len(action) > 3]
    assert set(removed[2:]) == {
        "/etc/systemd/system/cartd.service",
        "/etc/systemd/system/cartd-tui@.service",
        "/etc/udev/rules.d/60-cartd.rules",
    }
    assert ["rm", "-f", "/usr/local/bin/cartd"] in actions
    assert ["rm", "-rf", "/opt/cartd"] in actions
    touched = " ".join(" ".join(action) for action in actions)
    assert "/var/lib/cartd" not in touched and "/etc/cartd" not in touched
    assert not has(actions, "userdel") and not has(actions, "groupdel")
    assert "Kept: the records in /var/lib/cartd, the configuration in /etc/cartd" in output
    assert dry_run("--uninstall") == (actions, output)


def test_an_unknown_option_is_refused() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown option: --frobnicate" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="the tests run as root: the refusal is for others")
def test_without_root_it_refuses_to_change_anything() -> None:
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "run it as root" in result.stderr
