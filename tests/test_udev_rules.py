"""udev/60-cartd.rules: parsed by udev itself where this machine allows, and always by a small
syntax checker here (itself tested on broken lines), plus what the rules must do.

udev's own checks: `udevadm verify` (systemd 254 and later), and, on older systemd such as
Debian 12's 252, `udevadm test` in a private mount namespace where /etc/udev/rules.d holds only
this file (needs root; udevadm reports each line it cannot parse while it reads the rules). No
device is changed by either: `udevadm test` only simulates an event. .ci/run installs udev.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "udev" / "60-cartd.rules"

# udev(7): keys that only match, keys that only assign, and keys that do either.
MATCH_ONLY = {
    "ACTION", "DEVPATH", "KERNEL", "KERNELS", "SUBSYSTEM", "SUBSYSTEMS", "DRIVER", "DRIVERS",
    "ATTRS", "TAGS", "TEST", "PROGRAM", "RESULT", "CONST",
}  # fmt: skip
ASSIGN_ONLY = {
    "OWNER", "GROUP", "MODE", "SECLABEL", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS",
}  # fmt: skip
EITHER = {"NAME", "SYMLINK", "ATTR", "SYSCTL", "ENV", "TAG"}
# Keys that take (or, for RUN and IMPORT, may take) a {attribute} part.
WITH_ATTRIBUTE = {"ATTR", "ATTRS", "SYSCTL", "ENV", "TEST", "IMPORT", "RUN", "SECLABEL", "CONST"}
NEEDS_ATTRIBUTE = WITH_ATTRIBUTE - {"RUN", "TEST"}
MATCH_OPS = {"==", "!="}
ASSIGN_OPS = {"=", "+=", "-=", ":="}
# One KEY[{attr}] OP "value" pair; the value is a double-quoted string with \" escapes.
PAIR = re.compile(
    r'\s*(?P<key>[A-Z_]+)(?:\{(?P<attr>[^{}"]*)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*'
    r'(?P<value>"(?:[^"\\]|\\.)*")\s*(?P<sep>,|$)'
)


@dataclass(frozen=True)
class Pair:
    key: str
    attr: str | None
    op: str
    value: str


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each rule: comments and blank lines dropped, lines ending
    in a backslash joined to the next, as udev reads them."""
    rules: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
            if not line.strip() or line.lstrip().startswith("#"):
                continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        rules.append((start, pending + line))
        pending = ""
    if pending:
        rules.append((start, pending))
    return rules


def parse_rule(rule: str) -> list[Pair]:
    """The KEY op "value" pairs of one rule; ValueError says what is wrong with it."""
    pairs: list[Pair] = []
    position = 0
    rule = rule.rstrip()
    while position < len(rule):
        match = PAIR.match(rule, position)
        if match is None:
            raise ValueError(f'not a KEY op "value" pair at: {rule[position:]!r}')
        key, attr, op = match["key"], match["attr"], match["op"]
        if key not in MATCH_ONLY | ASSIGN_ONLY | EITHER:
            raise ValueError(f"unknown key {key}")
        if attr is not None and key not in WITH_ATTRIBUTE:
            raise ValueError(f"{key} takes no {{attribute}}")
        if attr is None and key in NEEDS_ATTRIBUTE:
            raise ValueError(f"{key} needs an {{attribute}}")
        if key in MATCH_ONLY and op not in MATCH_OPS:
            raise ValueError(f"{key} only matches: {op} where == or != belongs")
        if key in ASSIGN_ONLY and op not in ASSIGN_OPS:
            raise ValueError(f"{key} only assigns: {op} where = or += belongs")
        pairs.append(Pair(key, attr, op, match["value"][1:-1]))
        position = match.end()
        if match["sep"] == "," and position >= len(rule):
            raise ValueError("a comma at the end of the rule")
    if not pairs:
        raise ValueError("an empty rule")
    return pairs


def parsed_rules() -> list[tuple[int, list[Pair]]]:
    rules = []
    for number, rule in logical_lines(RULES.read_text()):
        try:
            rules.append((number, parse_rule(rule)))
        except ValueError as error:
            pytest.fail(f"{RULES.name}:{number}: {error}")
    return rules


def all_pairs() -> list[Pair]:
    return [pair for _, pairs in parsed_rules() for pair in pairs]


# --- the checker catches the mistakes it is for ---------------------------------------------


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ('KERNEL=="ttyUSB*, MODE="0660"', "not a KEY op"),  # unbalanced quotes
        ('KERNEL=="ttyUSB*", MODE="0660', "not a KEY op"),
        ('KERNL=="ttyUSB*", MODE="0660"', "unknown key"),
        ('KERNEL=="ttyUSB*", GROUP=="cartd"', "only assigns"),  # == on an assignment key
        ('SUBSYSTEM="tty", GROUP="cartd"', "only matches"),  # = on a match-only key
        ('KERNEL=="ttyUSB*" GROUP="cartd"', "not a KEY op"),  # missing comma
        ('KERNEL=="ttyUSB*", GROUP="cartd",', "comma at the end"),
        ('ENV=="x", GROUP="cartd"', "needs an {attribute}"),
        ('KERNEL{x}=="ttyUSB*"', "takes no {attribute}"),
    ],
)
def test_the_checker_rejects_broken_rules(rule: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        parse_rule(rule)


def test_the_checker_accepts_udevs_own_forms() -> None:
    """Lines in the style of systemd's 60-serial.rules and 99-systemd.rules."""
    parse_rule(
        'SUBSYSTEMS=="usb", IMPORT{builtin}="usb_id", IMPORT{builtin}="hwdb --subsystem=usb"'
    )
    parse_rule('ENV{ID_PATH}=="?*", ENV{.ID_PORT}=="", SYMLINK+="serial/by-path/$env{ID_PATH}"')
    parse_rule('KERNEL=="vport*", TAG+="systemd", ENV{SYSTEMD_WANTS}+="x.service"')
    parse_rule(r'RUN+="/bin/sh -c \"echo 1 > /sys$devpath/x\""')


# --- this file ----------------------------------------------------------------------------------


def test_every_rule_parses() -> None:
    assert len(parsed_rules()) > 10


def test_every_goto_has_its_label_after_it() -> None:
    labels: dict[str, int] = {}
    gotos: list[tuple[int, str]] = []
    for number, pairs in parsed_rules():
        for pair in pairs:
            if pair.key == "LABEL":
                assert pair.value not in labels, f"line {number}: LABEL {pair.value} twice"
                labels[pair.value] = number
            elif pair.key == "GOTO":
                gotos.append((number, pair.value))
    for number, label in gotos:
        assert label in labels, f"line {number}: GOTO {label} has no LABEL"
        assert labels[label] > number, f"line {number}: GOTO {label} jumps backwards"


def test_symlinks_are_under_dev_cartd() -> None:
    links = [pair.value for pair in all_pairs() if pair.key == "SYMLINK"]
    assert links
    for link in links:
        assert link.startswith("cartd/"), link
        assert "/" not in link.removeprefix("cartd/"), link


def test_stable_names_by_serial_and_by_path_for_each_kind() -> None:
    links = [pair.value for pair in all_pairs() if pair.key == "SYMLINK"]
    assert any("$env{ID_SERIAL_SHORT}" in link for link in links)
    assert any("-path-$env{ID_PATH_TAG}" in link for link in links)
    kinds = {pair.value for pair in all_pairs() if pair.key == "ENV" and pair.attr == "CARTD_KIND"}
    assert {"serial", "debug-cable", "xhci-dbc"} <= kinds


def test_ftdi_latency_timer_is_one_millisecond() -> None:
    for _, pairs in parsed_rules():
        keys = {(pair.key, pair.attr, pair.op, pair.value) for pair in pairs}
        if ("ATTR", "latency_timer", "=", "1") in keys:
            assert ("SUBSYSTEM", None, "==", "usb-serial") in keys
            assert ("DRIVER", None, "==", "ftdi_sio") in keys
            return
    pytest.fail("no rule sets the FTDI latency_timer")


def test_debug_devices_are_recognised_by_vendor_and_product() -> None:
    text = RULES.read_text()
    assert 'idVendor}=="0525", ATTRS{idProduct}=="127a"' in text  # USB 2.0 debug cable, tty
    assert 'idVendor}=="0525", ATTR{idProduct}=="127a"' in text  # and its raw USB node
    assert 'ENV{ID_USB_INTERFACES}=="*:dc02??:*"' in text  # any xHCI DbC


def test_groups_modes_and_the_daemon_poke() -> None:
    pairs = all_pairs()
    assignments = {(pair.key, pair.value) for pair in pairs if pair.op in ASSIGN_OPS}
    assert ("GROUP", "dialout") in assignments and ("GROUP", "cartd") in assignments
    assert {value for key, value in assignments if key == "MODE"} == {"0660", "0664"}
    assert ("RUN", "/usr/bin/setfacl -m g:cartd:rw $devnode") in assignments
    # Every SYSTEMD_WANTS is on "add" and in a rule that tags the device for systemd.
    wants = [
        pairs
        for _, pairs in parsed_rules()
        if any(pair.key == "ENV" and pair.attr == "SYSTEMD_WANTS" for pair in pairs)
    ]
    assert len(wants) >= 3
    for rule in wants:
        fields = {(pair.key, pair.attr, pair.op, pair.value) for pair in rule}
        assert ("ENV", "SYSTEMD_WANTS", "+=", "cartd.service") in fields
        assert ("TAG", None, "+=", "systemd") in fields
        assert ("ACTION", None, "==", "add") in fields


# --- udev's own parser ----------------------------------------------------------------------------


def udevadm_has_verify() -> bool:
    udevadm = shutil.which("udevadm")
    if udevadm is None:
        return False
    result = subprocess.run([udevadm, "--help"], capture_output=True, text=True, check=False)
    return re.search(r"^\s+verify\b", result.stdout, re.MULTILINE) is not None


@pytest.mark.skipif(
    not udevadm_has_verify(),
    reason="`udevadm verify` needs systemd 254 or later (Debian 12 has 252); "
    "test_udevadm_test_reads_the_rules_cleanly covers older udev",
)
def test_udevadm_verify() -> None:
    result = subprocess.run(
        ["udevadm", "verify", "--resolve-names=never", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def some_device() -> Path | None:
    """A device udevadm test can simulate an event for (any will do: it reads every rule)."""
    for candidate in ("/sys/class/tty/tty0", "/sys/class/mem/null", "/sys/class/net/lo"):
        if Path(candidate).exists():
            return Path(candidate)
    return None


@pytest.mark.skipif(shutil.which("udevadm") is None, reason="udevadm is not installed (udev)")
@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is missing")
@pytest.mark.skipif(some_device() is None, reason="no device in /sys to simulate an event for")
def test_udevadm_test_reads_the_rules_cleanly(tmp_path: Path) -> None:
    """udev 252's parser on this file alone: /etc/udev/rules.d is replaced by a directory holding
    only a copy of it, in a mount namespace of this command only (the system is not touched)."""
    rules_dir = tmp_path / "rules.d"
    rules_dir.mkdir()
    shutil.copy(RULES, rules_dir / RULES.name)
    script = (
        f"mount --bind {rules_dir} /etc/udev/rules.d && "
        f"exec udevadm test --action=add {some_device()}"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    if "Reading rules file: /etc/udev/rules.d/60-cartd.rules" not in output:
        pytest.skip(f"could not run udevadm test in a mount namespace here: {output[-500:]}")
    complaints = [
        line
        for line in output.splitlines()
        if "60-cartd.rules:" in line
        # The group exists once deploy/install.sh has run; not on a build machine.
        and "Unknown group 'cartd'" not in line
    ]
    assert complaints == [], "\n".join(complaints)
