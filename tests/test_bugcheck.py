"""Bugcheck names, parameter meanings, the Fatal System Error print, KiBugCheckData and the
choice between them (cartd.kd.bugcheck_codes, cartd.kd.bugcheck)."""

from __future__ import annotations

import ast
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cartd.kd.bugcheck import (
    FATAL_SCAN_WINDOW,
    KI_BUGCHECK_DATA_SIZE,
    BugcheckBreak,
    FatalSystemErrorScanner,
    KiBugcheckDataError,
    bugcheck_data_address,
    guess_pointer_size,
    is_breakpoint_with_status_stop,
    is_bugcheck_break,
    ki_bugcheck_data_size,
    parse_fatal_system_error,
    pull_ki_bugcheck_data,
    recover_bugcheck,
)
from cartd.kd.bugcheck_codes import (
    BUGCHECK_ALIASES,
    BUGCHECK_NAMES,
    LIVE_DUMP_CODES,
    BugcheckInfo,
    bugcheck_cause,
    bugcheck_code,
    bugcheck_name,
    bugcheck_parameter_meanings,
    canonical_bugcheck_code,
    described_codes,
)
from cartd.kd.constants import MANUALLY_INITIATED_CRASH, NtStatus
from cartd.kd.debugger_data import DebuggerData, KdbgOffset, pull_debugger_data, push_debugger_data

# The 30 codes seen most on real crash carts: each must have parameter meanings.
FIELD_CODES = (
    0x0A, 0x19, 0x1A, 0x1E, 0x24, 0x3B, 0x4E, 0x50, 0x7A, 0x7E,
    0x7F, 0x9C, 0x9F, 0xA0, 0xBE, 0xC2, 0xC4, 0xC5, 0xD1, 0xE2,
    0xEF, 0xF4, 0xFC, 0x101, 0x116, 0x119, 0x124, 0x133, 0x139, 0x154,
)  # fmt: skip

KDBG_ADDRESS = 0xFFFFF800_12400000
BREAKPOINT_WITH_STATUS = 0xFFFFF800_11A05F30
KI_BUGCHECK_DATA = 0xFFFFF800_12500B40


def make_kdbg(
    *,
    breakpoint_with_status: int = BREAKPOINT_WITH_STATUS,
    ki_bugcheck_data: int = KI_BUGCHECK_DATA,
    kern_base: int = 0xFFFFF800_11A00000,
) -> DebuggerData:
    raw = push_debugger_data(
        {
            KdbgOffset.KERN_BASE: kern_base,
            KdbgOffset.BREAKPOINT_WITH_STATUS: breakpoint_with_status,
            KdbgOffset.KI_BUGCHECK_DATA: ki_bugcheck_data,
        }
    )
    return pull_debugger_data(raw, address=KDBG_ADDRESS)


def fatal_text(code: int, params: tuple[int, int, int, int], *, digits: int = 16) -> str:
    """The print exactly as the kernel formats it (spec 4.1 step 2)."""
    body = ",".join(f"0x{value:0{digits}X}" for value in params)
    return f"\n*** Fatal System Error: 0x{code:08x}\n{' ' * 23}({body})\n\n"


# --- Names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0x0A, "IRQL_NOT_LESS_OR_EQUAL"),
        (0x1E, "KMODE_EXCEPTION_NOT_HANDLED"),
        (0x3B, "SYSTEM_SERVICE_EXCEPTION"),
        (0x50, "PAGE_FAULT_IN_NONPAGED_AREA"),
        (0x7E, "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED"),
        (0x7F, "UNEXPECTED_KERNEL_MODE_TRAP"),
        (0x9F, "DRIVER_POWER_STATE_FAILURE"),
        (0xA0, "INTERNAL_POWER_ERROR"),
        (0xC2, "BAD_POOL_CALLER"),
        (0xC4, "DRIVER_VERIFIER_DETECTED_VIOLATION"),
        (0xD1, "DRIVER_IRQL_NOT_LESS_OR_EQUAL"),
        (0xE2, "MANUALLY_INITIATED_CRASH"),
        (0xEF, "CRITICAL_PROCESS_DIED"),
        (0x101, "CLOCK_WATCHDOG_TIMEOUT"),
        (0x124, "WHEA_UNCORRECTABLE_ERROR"),
        (0x133, "DPC_WATCHDOG_VIOLATION"),
        (0x139, "KERNEL_SECURITY_CHECK_FAILURE"),
        (0x13A, "KERNEL_MODE_HEAP_CORRUPTION"),
        (0x1CA, "SYNTHETIC_WATCHDOG_TIMEOUT"),
        (0xDF, "IMPERSONATING_WORKER_THREAD"),  # the reference's index table has a typo here
        (0x1D0, "ACPI_FIRMWARE_WATCHDOG_TIMEOUT"),  # and here
        (0xC000021A, "WINLOGON_FATAL_ERROR"),
        (0xDEADDEAD, "MANUALLY_INITIATED_CRASH1"),
    ],
)
def test_well_known_names(code: int, name: str) -> None:
    assert bugcheck_name(code) == name
    assert bugcheck_code(name) == code


def test_manually_initiated_crash_constant_agrees() -> None:
    assert bugcheck_name(MANUALLY_INITIATED_CRASH) == "MANUALLY_INITIATED_CRASH"


def test_table_covers_the_reference() -> None:
    assert len(BUGCHECK_NAMES) >= 400
    assert all(0 < code <= 0xFFFF_FFFF for code in BUGCHECK_NAMES)
    assert all(
        name and name == name.upper() and " " not in name for name in BUGCHECK_NAMES.values()
    )
    assert LIVE_DUMP_CODES.issubset(BUGCHECK_NAMES)


def test_no_duplicate_names_except_documented_aliases() -> None:
    by_name: dict[str, int] = {}
    for code, name in BUGCHECK_NAMES.items():
        assert name not in by_name, f"{name} names both {by_name[name]:#x} and {code:#x}"
        by_name[name] = code
    # An alias is an extra name for a listed code, never a second code for a listed name.
    for alias, code in BUGCHECK_ALIASES.items():
        assert alias not in by_name
        assert code in BUGCHECK_NAMES
        assert bugcheck_code(alias) == code


def test_m_variants_take_the_base_name_with_suffix() -> None:
    # Listed in the reference...
    assert bugcheck_name(0x1000007E) == "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M"
    assert bugcheck_name(0x1000008E) == "KERNEL_MODE_EXCEPTION_NOT_HANDLED_M"
    # ...and derived the WinDbg way for the others.
    assert bugcheck_name(0x100000D1) == "DRIVER_IRQL_NOT_LESS_OR_EQUAL_M"
    assert bugcheck_name(0x1000000A) == "IRQL_NOT_LESS_OR_EQUAL_M"
    assert bugcheck_code("IRQL_NOT_LESS_OR_EQUAL_M") == 0x1000000A
    # Every listed _M entry agrees with the derivation rule.
    for code, name in BUGCHECK_NAMES.items():
        if code >> 28 == 1:
            assert name == BUGCHECK_NAMES[code & 0x0FFF_FFFF] + "_M"
    assert canonical_bugcheck_code(0x1000007E) == 0x7E
    # Other high bits are not the _M flag.
    assert bugcheck_name(0x3000007E) == "UNKNOWN_BUGCHECK_0x3000007E"


def test_unknown_codes_and_masking() -> None:
    assert bugcheck_name(0x123456) == "UNKNOWN_BUGCHECK_0x00123456"
    assert bugcheck_name(0x1000_0123_4567) == "UNKNOWN_BUGCHECK_0x01234567"
    assert bugcheck_name(0xFFFF_FFFF_0000_003B) == "SYSTEM_SERVICE_EXCEPTION"
    assert bugcheck_name(0) == "UNKNOWN_BUGCHECK_0x00000000"
    assert bugcheck_code("UNKNOWN_BUGCHECK_0x00123456") == 0x123456
    assert bugcheck_code("NOT_A_BUGCHECK") is None
    assert bugcheck_code(" page_fault_in_nonpaged_area ") == 0x50


@given(st.integers(min_value=-(2**70), max_value=2**70))
def test_any_integer_has_a_name_that_maps_back(code: int) -> None:
    name = bugcheck_name(code)
    assert bugcheck_code(name) == code & 0xFFFF_FFFF


# --- Parameter meanings --------------------------------------------------------------------------


@pytest.mark.parametrize("code", FIELD_CODES)
def test_field_codes_have_parameter_meanings(code: int) -> None:
    meanings = bugcheck_parameter_meanings(code)
    assert meanings is not None
    assert len(meanings) == 4
    assert all(isinstance(text, str) and text.strip() for text in meanings)
    assert code in described_codes()


def test_parameter_meanings_details() -> None:
    assert bugcheck_parameter_meanings(0xD1) == (
        "Memory referenced",
        "IRQL at the time of the reference",
        "0 = read, 1 = write, 2 or 8 = execute",
        "Address of the instruction that referenced the memory",
    )
    # _M variants have "the same meaning and parameters" as their base code.
    assert bugcheck_parameter_meanings(0x1000007E) == bugcheck_parameter_meanings(0x7E)
    assert bugcheck_parameter_meanings(0x123456) is None
    assert bugcheck_parameter_meanings(0x7B) is not None


def test_parameter_meanings_refined_by_parameter_1() -> None:
    general = bugcheck_parameter_meanings(0x9F)
    assert general is not None and "Depends on parameter 1" in general[1]
    refined = bugcheck_parameter_meanings(0x9F, parameter1=4)
    assert refined is not None
    assert refined[0] == general[0]
    assert refined[1:] == (
        "Time-out in seconds",
        "Thread holding the PnP lock",
        "nt!_TRIAGE_9F_PNP",
    )
    # A case without its own parameter texts, or an unknown case, keeps the general ones.
    assert bugcheck_parameter_meanings(0x139, parameter1=3) == bugcheck_parameter_meanings(0x139)
    assert bugcheck_parameter_meanings(0x9F, parameter1=0x999) == general
    assert bugcheck_cause(0x139, 3) == "Corrupted LIST_ENTRY (for example a double remove)"
    assert bugcheck_cause(0x7F, 8) == "Double fault (often a kernel stack overflow)"
    assert bugcheck_cause(0x1000007F, 8) == bugcheck_cause(0x7F, 8)
    assert bugcheck_cause(0x3B, 0xC0000005) is None


# --- BugcheckInfo --------------------------------------------------------------------------------


def test_describe_reads_like_analyze() -> None:
    info = BugcheckInfo(code=0xD1, parameters=(0xFFFFC08C_AA7F3000, 2, 0, 0xFFFFF806_2B4A1F2C))
    assert info.name == "DRIVER_IRQL_NOT_LESS_OR_EQUAL"
    assert info.describe().splitlines() == [
        "DRIVER_IRQL_NOT_LESS_OR_EQUAL (d1)",
        "Arguments:",
        "Arg1: ffffc08caa7f3000, Memory referenced",
        "Arg2: 0000000000000002, IRQL at the time of the reference",
        "Arg3: 0000000000000000, 0 = read, 1 = write, 2 or 8 = execute",
        "Arg4: fffff8062b4a1f2c, Address of the instruction that referenced the memory",
    ]


def test_describe_with_cause_unknown_code_and_x86_width() -> None:
    text = BugcheckInfo(code=0x133, parameters=(1, 0x1E00, 0xFFFFF805_1F2FB320, 0)).describe()
    assert "DPC_WATCHDOG_VIOLATION (133)" in text
    assert "Cause: Too long at DISPATCH_LEVEL or above in total" in text
    assert "Arg2: 0000000000001e00, Watchdog period" in text

    unknown = BugcheckInfo(code=0x4242, parameters=(1, 2, 3, 4)).describe(pointer_size=4)
    assert unknown.splitlines() == [
        "UNKNOWN_BUGCHECK_0x00004242 (4242)",
        "Arguments:",
        "Arg1: 00000001",
        "Arg2: 00000002",
        "Arg3: 00000003",
        "Arg4: 00000004",
    ]
    with pytest.raises(ValueError):
        BugcheckInfo(code=0x50, parameters=(0, 0, 0, 0)).describe(pointer_size=2)


def test_bugcheck_info_validates_and_keeps_a_given_name() -> None:
    assert str(BugcheckInfo(code=0x3B, parameters=(0xC0000005, 0x10, 0, 0))) == (
        "0x0000003b SYSTEM_SERVICE_EXCEPTION (0xc0000005, 0x10, 0x0, 0x0)"
    )
    assert BugcheckInfo(code=0x50, parameters=(0, 0, 0, 0), name="FROM_DUMP").name == "FROM_DUMP"
    with pytest.raises(ValueError):
        BugcheckInfo(code=1 << 32, parameters=(0, 0, 0, 0))
    with pytest.raises(ValueError):
        BugcheckInfo(code=0x50, parameters=(0, 0, 0, 1 << 64))
    with pytest.raises(ValueError):
        BugcheckInfo(code=0x50, parameters=(0, 0, 0))  # type: ignore[arg-type]


# --- The Fatal System Error print ----------------------------------------------------------------

X64_PARAMS = (0xC0000005, 0xFFFFF806_2B4A1F2C, 0xFFFFA301_5E2F6920, 0)
X64_TEXT = fatal_text(0x3B, X64_PARAMS)
X64_INFO = BugcheckInfo(code=0x3B, parameters=X64_PARAMS)


def test_parse_x64_print() -> None:
    assert X64_TEXT == (
        "\n*** Fatal System Error: 0x0000003b\n"
        "                       (0x00000000C0000005,0xFFFFF8062B4A1F2C,0xFFFFA3015E2F6920,"
        "0x0000000000000000)\n\n"
    )
    assert parse_fatal_system_error(X64_TEXT) == X64_INFO


def test_parse_x86_print() -> None:
    params = (0x8, 0x801E8000, 0, 0)
    text = fatal_text(0x7F, params, digits=8)
    assert "(0x00000008,0x801E8000,0x00000000,0x00000000)" in text
    assert parse_fatal_system_error(text) == BugcheckInfo(code=0x7F, parameters=params)


def test_parse_is_lenient_about_case_whitespace_and_garbage() -> None:
    text = (
        "KDTARGET: Refreshing KD connection\n"
        "garbage \x00\xff ***   FATAL system ERROR:0X000000D1\r\n"
        "\t( 0xffffc08caa7f3000 , 0x2,0x0 ,\n0xfffff8062b4a1f2c )\n"
        "Driver at fault: mydriver.sys.\n"
    )
    assert parse_fatal_system_error(text) == BugcheckInfo(
        code=0xD1, parameters=(0xFFFFC08C_AA7F3000, 2, 0, 0xFFFFF806_2B4A1F2C)
    )


def test_parse_rejects_incomplete_or_absent_records() -> None:
    assert parse_fatal_system_error("") is None
    assert parse_fatal_system_error("hello world\n") is None
    assert parse_fatal_system_error(X64_TEXT.split("(")[0]) is None
    assert parse_fatal_system_error(X64_TEXT.replace(")", "")) is None
    assert parse_fatal_system_error(X64_TEXT.replace(",0x0000000000000000", "")) is None


def test_parse_takes_the_last_record() -> None:
    first = fatal_text(0x50, (1, 2, 3, 4))
    assert parse_fatal_system_error(first + "noise" + X64_TEXT) == X64_INFO


def test_scanner_joins_a_record_split_over_two_prints() -> None:
    closing = X64_TEXT.index(")")
    for cut in range(1, len(X64_TEXT)):
        scanner = FatalSystemErrorScanner()
        if cut <= closing:
            assert scanner.feed(X64_TEXT[:cut]) is None, cut
            assert scanner.feed(X64_TEXT[cut:]) == X64_INFO, cut
        else:  # the first print already held the whole record; the rest is only newlines
            assert scanner.feed(X64_TEXT[:cut]) == X64_INFO, cut
            assert scanner.feed(X64_TEXT[cut:]) is None, cut


def test_scanner_reports_each_record_once_and_keeps_a_bounded_tail() -> None:
    scanner = FatalSystemErrorScanner()
    assert scanner.feed("boot noise\n" + X64_TEXT) == X64_INFO
    assert scanner.feed("more noise\n") is None
    assert scanner.feed("x" * 100_000) is None
    assert scanner.buffered_chars <= FATAL_SCAN_WINDOW
    second = fatal_text(0xE2, (0, 0, 0, 0))
    assert scanner.feed(second[:20]) is None
    assert scanner.feed(second[20:]) == BugcheckInfo(code=0xE2, parameters=(0, 0, 0, 0))
    scanner.feed(second[:30])
    scanner.reset()
    assert scanner.feed(second[30:]) is None


@given(st.text())
def test_arbitrary_text_never_raises(text: str) -> None:
    parse_fatal_system_error(text)
    scanner = FatalSystemErrorScanner()
    scanner.feed(text)
    for char in text:
        scanner.feed(char)
    assert scanner.buffered_chars <= FATAL_SCAN_WINDOW


_params = st.tuples(*[st.integers(min_value=0, max_value=2**64 - 1)] * 4)
_noise = st.text(alphabet=st.characters(blacklist_characters="fF"), max_size=40)


@settings(max_examples=50)
@given(
    st.lists(st.tuples(_noise, st.integers(min_value=0, max_value=2**32 - 1), _params), max_size=3),
    _noise,
)
def test_scanner_finds_the_same_records_whole_and_one_char_at_a_time(
    pieces: list[tuple[str, int, tuple[int, int, int, int]]], tail: str
) -> None:
    text = "".join(noise + fatal_text(code, params) for noise, code, params in pieces) + tail
    expected = [BugcheckInfo(code=code, parameters=params) for _, code, params in pieces]
    scanner = FatalSystemErrorScanner()
    found = [info for char in text if (info := scanner.feed(char)) is not None]
    assert found == expected
    assert parse_fatal_system_error(text) == (expected[-1] if expected else None)


# --- KiBugCheckData ------------------------------------------------------------------------------


def test_pull_ki_bugcheck_data_x64() -> None:
    assert KI_BUGCHECK_DATA_SIZE == 40 == ki_bugcheck_data_size(8)
    # The code is a ULONG in a ULONG_PTR: upper-half junk is not part of it.
    raw = struct.pack("<5Q", 0xFFFF_FFFF_0000_009F, 3, 0xFFFFE001_23456789, 0xFFFFF806_00001000, 7)
    info = pull_ki_bugcheck_data(raw + b"\xcc" * 8)
    assert info == BugcheckInfo(
        code=0x9F, parameters=(3, 0xFFFFE001_23456789, 0xFFFFF806_00001000, 7)
    )
    assert info.name == "DRIVER_POWER_STATE_FAILURE"


def test_pull_ki_bugcheck_data_x86() -> None:
    assert ki_bugcheck_data_size(4) == 20
    raw = struct.pack("<5I", 0x1000007E, 0xC0000005, 0x8054A1B2, 0xF78D2C84, 0xF78D2980)
    info = pull_ki_bugcheck_data(raw, pointer_size=4)
    assert info.code == 0x1000007E
    assert info.parameters == (0xC0000005, 0x8054A1B2, 0xF78D2C84, 0xF78D2980)
    assert info.name == "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M"


def test_pull_ki_bugcheck_data_rejects_bad_input() -> None:
    with pytest.raises(KiBugcheckDataError, match="needs 40 bytes"):
        pull_ki_bugcheck_data(bytes(39))
    with pytest.raises(ValueError):
        pull_ki_bugcheck_data(bytes(19), pointer_size=4)
    with pytest.raises(ValueError):
        pull_ki_bugcheck_data(bytes(40), pointer_size=2)
    assert pull_ki_bugcheck_data(bytes(40)).code == 0


# --- Classifying the stop ------------------------------------------------------------------------


def test_bugcheck_data_address() -> None:
    assert bugcheck_data_address(make_kdbg()) == KI_BUGCHECK_DATA
    assert bugcheck_data_address(make_kdbg(ki_bugcheck_data=0)) is None


@pytest.mark.parametrize(
    ("rcx", "expected"),
    [
        (3, BugcheckBreak.FIRST),
        (4, BugcheckBreak.SECOND),
        (5, BugcheckBreak.FATAL),
        (0xDEADBEEF_00000003, BugcheckBreak.FIRST),  # only the ULONG argument counts
        (1, None),  # DBG_STATUS_CONTROL_C: a break-in, not a bugcheck
        (7, None),
        (None, None),  # context not read yet
    ],
)
def test_is_bugcheck_break_by_status(rcx: int | None, expected: BugcheckBreak | None) -> None:
    kdbg = make_kdbg()
    assert is_breakpoint_with_status_stop(NtStatus.BREAKPOINT, BREAKPOINT_WITH_STATUS, kdbg)
    assert is_bugcheck_break(NtStatus.BREAKPOINT, BREAKPOINT_WITH_STATUS, kdbg, rcx) is expected


def test_is_bugcheck_break_needs_the_right_stop() -> None:
    kdbg = make_kdbg()
    # Another int3 with 3 in RCX (a driver's DbgBreakPoint) is not a bugcheck.
    assert is_bugcheck_break(NtStatus.BREAKPOINT, BREAKPOINT_WITH_STATUS + 1, kdbg, 3) is None
    assert is_bugcheck_break(NtStatus.SINGLE_STEP, BREAKPOINT_WITH_STATUS, kdbg, 3) is None
    assert is_bugcheck_break(NtStatus.ACCESS_VIOLATION, BREAKPOINT_WITH_STATUS, kdbg, 3) is None
    assert is_bugcheck_break(NtStatus.BREAKPOINT, BREAKPOINT_WITH_STATUS, None, 3) is None
    no_bp = make_kdbg(breakpoint_with_status=0)
    assert is_bugcheck_break(NtStatus.BREAKPOINT, 0, no_bp, 3) is None
    assert not is_breakpoint_with_status_stop(NtStatus.BREAKPOINT, 0, no_bp)


def test_x86_addresses_compare_across_sign_extension() -> None:
    kdbg = make_kdbg(breakpoint_with_status=0x8052_6F2C, kern_base=0x804D_7000)
    pc = 0xFFFF_FFFF_8052_6F2C  # the state change sign-extends
    assert is_bugcheck_break(NtStatus.BREAKPOINT, pc, kdbg, 3) is BugcheckBreak.FIRST
    assert guess_pointer_size(kdbg) == 4
    assert guess_pointer_size(make_kdbg()) == 8
    assert guess_pointer_size(None) == 8
    # An x64 address is never confused with a 32-bit one of the same low half.
    x64 = make_kdbg(breakpoint_with_status=0xFFFFF800_8052_6F2C)
    assert is_bugcheck_break(NtStatus.BREAKPOINT, 0x8052_6F2C, x64, 3) is None


# --- Choosing the source -------------------------------------------------------------------------

MEMORY_RAW = struct.pack("<5Q", 0x133, 1, 0x1E00, 0xFFFFF805_1F2FB320, 0)
MEMORY_INFO = BugcheckInfo(code=0x133, parameters=(1, 0x1E00, 0xFFFFF805_1F2FB320, 0))
PRINT_INFO = BugcheckInfo(code=0x133, parameters=(1, 0x1E00, 0, 0))


def test_recover_prefers_ki_bugcheck_data() -> None:
    kdbg = make_kdbg()
    got = recover_bugcheck(kdbg=kdbg, ki_bugcheck_raw=MEMORY_RAW, fatal_print=PRINT_INFO)
    assert got == MEMORY_INFO
    assert recover_bugcheck(kdbg=None, ki_bugcheck_raw=MEMORY_RAW, fatal_print=None) == MEMORY_INFO


def test_recover_falls_back_to_the_print() -> None:
    kdbg = make_kdbg()
    # Nothing recorded yet (zero code), a short read, or no read at all: use the print.
    zero = bytes(KI_BUGCHECK_DATA_SIZE)
    assert recover_bugcheck(kdbg=kdbg, ki_bugcheck_raw=zero, fatal_print=PRINT_INFO) == PRINT_INFO
    short = MEMORY_RAW[:39]
    assert recover_bugcheck(kdbg=kdbg, ki_bugcheck_raw=short, fatal_print=PRINT_INFO) == PRINT_INFO
    assert recover_bugcheck(kdbg=kdbg, ki_bugcheck_raw=None, fatal_print=PRINT_INFO) == PRINT_INFO
    assert recover_bugcheck(kdbg=None, ki_bugcheck_raw=None, fatal_print=PRINT_INFO) == PRINT_INFO


def test_recover_without_any_source() -> None:
    kdbg = make_kdbg()
    assert recover_bugcheck(kdbg=kdbg, ki_bugcheck_raw=None, fatal_print=None) is None
    zero = bytes(KI_BUGCHECK_DATA_SIZE)
    assert recover_bugcheck(kdbg=kdbg, ki_bugcheck_raw=zero, fatal_print=None) is None


def test_recover_decodes_x86_memory_by_kdbg_or_explicit_size() -> None:
    raw = struct.pack("<5I", 0xE2, 0, 0, 0, 0)
    x86 = make_kdbg(breakpoint_with_status=0x8052_6F2C, kern_base=0x804D_7000)
    expected = BugcheckInfo(code=0xE2, parameters=(0, 0, 0, 0))
    assert recover_bugcheck(kdbg=x86, ki_bugcheck_raw=raw, fatal_print=None) == expected
    got = recover_bugcheck(kdbg=None, ki_bugcheck_raw=raw, fatal_print=None, pointer_size=4)
    assert got == expected
    # Read as x64 the 20 bytes are too short: nothing from memory, nothing printed for 0xE2.
    assert recover_bugcheck(kdbg=None, ki_bugcheck_raw=raw, fatal_print=None) is None


# --- Boundaries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["bugcheck.py", "bugcheck_codes.py"])
def test_modules_import_no_io(module: str) -> None:
    source = Path(__file__).parent.parent / "cartd" / "kd" / module
    tree = ast.parse(source.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "serial", "threading", "time", "logging"}
