"""Numbers of the KD wire protocol: packet framing, packet ids, API numbers and status codes.

Every value is restated from the fact sheet `shared/spec/kd-serial-and-dumps.md` (sections named
in the comments), which in turn names its public sources; the Windows name of each member is kept
in a comment so that a reader can grep Microsoft's and ReactOS' headers for it.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

# --- Framing (spec section 1) -------------------------------------------------------------------

DATA_PACKET_LEADER = 0x30303030  # PACKET_LEADER, ASCII "0000"
CONTROL_PACKET_LEADER = 0x69696969  # CONTROL_PACKET_LEADER, ASCII "iiii"
DATA_LEADER_BYTE = 0x30
CONTROL_LEADER_BYTE = 0x69
PACKET_TRAILING_BYTE = 0xAA  # PACKET_TRAILING_BYTE, ends every data packet (not control packets)
BREAKIN_BYTE = 0x62  # BREAKIN_PACKET_BYTE, 'b': a single byte asks a running target to break in
PACKET_HEADER_SIZE = 16  # sizeof(KD_PACKET)

# PACKET_MAX_SIZE: the ByteCount field is a u16, but targets refuse (RESEND) any payload larger
# than 4000 bytes, so neither role ever sends one and a decoder treats a larger count as noise.
PACKET_MAX_SIZE = 4000

# The 0x38-byte DBGKD_MANIPULATE_STATE64 header travels in the same payload as the data, so a
# single request or reply carries at most 4000 - 0x38 = 3944 bytes of memory or context.
MANIPULATE_HEADER_SIZE = 0x38
MAX_MANIPULATE_DATA = PACKET_MAX_SIZE - MANIPULATE_HEADER_SIZE

# --- Packet ids (spec section 3) ----------------------------------------------------------------

INITIAL_PACKET_ID = 0x80800000  # INITIAL_PACKET_ID
SYNC_PACKET_ID = 0x00000800  # SYNC_PACKET_ID: or-ed into the first packet after a reset/boot
# Host RESET and RESEND carry id 0 (radare2, rizin, ReactOS); targets ignore the id.
CONTROL_PACKET_ID = 0


class PacketType(IntEnum):
    """KD_PACKET.PacketType (spec section 2)."""

    UNUSED = 0  # PACKET_TYPE_UNUSED
    KD_STATE_CHANGE32 = 1  # PACKET_TYPE_KD_STATE_CHANGE32 (pre-XP, never produced here)
    KD_STATE_MANIPULATE = 2  # PACKET_TYPE_KD_STATE_MANIPULATE
    KD_DEBUG_IO = 3  # PACKET_TYPE_KD_DEBUG_IO
    KD_ACKNOWLEDGE = 4  # PACKET_TYPE_KD_ACKNOWLEDGE
    KD_RESEND = 5  # PACKET_TYPE_KD_RESEND
    KD_RESET = 6  # PACKET_TYPE_KD_RESET
    KD_STATE_CHANGE64 = 7  # PACKET_TYPE_KD_STATE_CHANGE64
    KD_POLL_BREAKIN = 8  # PACKET_TYPE_KD_POLL_BREAKIN (never on the wire)
    KD_TRACE_IO = 9  # PACKET_TYPE_KD_TRACE_IO
    KD_CONTROL_REQUEST = 10  # PACKET_TYPE_KD_CONTROL_REQUEST
    KD_FILE_IO = 11  # PACKET_TYPE_KD_FILE_IO
    MAX = 12  # PACKET_TYPE_MAX


CONTROL_PACKET_TYPES = frozenset(
    {PacketType.KD_ACKNOWLEDGE, PacketType.KD_RESEND, PacketType.KD_RESET}
)
# Data packet types a real target or host puts on the wire.
DATA_PACKET_TYPES = frozenset(
    {
        PacketType.KD_STATE_CHANGE32,
        PacketType.KD_STATE_MANIPULATE,
        PacketType.KD_DEBUG_IO,
        PacketType.KD_STATE_CHANGE64,
        PacketType.KD_TRACE_IO,
        PacketType.KD_CONTROL_REQUEST,
        PacketType.KD_FILE_IO,
    }
)


# --- DBGKD_WAIT_STATE_CHANGE64.NewState (spec section 4) ----------------------------------------


class NewState(IntEnum):
    EXCEPTION = 0x3030  # DbgKdExceptionStateChange
    LOAD_SYMBOLS = 0x3031  # DbgKdLoadSymbolsStateChange
    COMMAND_STRING = 0x3032  # DbgKdCommandStringStateChange


# DbgKdAlternateStateChange: or-ed into NewState when the report comes from an "alternate source".
ALTERNATE_STATE_CHANGE_FLAG = 0x10000


# --- DBGKD_MANIPULATE_STATE64.ApiNumber (spec section 5.1) --------------------------------------


class ManipulateApi(IntEnum):
    READ_VIRTUAL_MEMORY = 0x3130  # DbgKdReadVirtualMemoryApi
    WRITE_VIRTUAL_MEMORY = 0x3131  # DbgKdWriteVirtualMemoryApi
    GET_CONTEXT = 0x3132  # DbgKdGetContextApi
    SET_CONTEXT = 0x3133  # DbgKdSetContextApi
    WRITE_BREAKPOINT = 0x3134  # DbgKdWriteBreakPointApi
    RESTORE_BREAKPOINT = 0x3135  # DbgKdRestoreBreakPointApi
    CONTINUE = 0x3136  # DbgKdContinueApi
    READ_CONTROL_SPACE = 0x3137  # DbgKdReadControlSpaceApi
    WRITE_CONTROL_SPACE = 0x3138  # DbgKdWriteControlSpaceApi
    READ_IO_SPACE = 0x3139  # DbgKdReadIoSpaceApi
    WRITE_IO_SPACE = 0x313A  # DbgKdWriteIoSpaceApi
    REBOOT = 0x313B  # DbgKdRebootApi
    CONTINUE2 = 0x313C  # DbgKdContinueApi2
    READ_PHYSICAL_MEMORY = 0x313D  # DbgKdReadPhysicalMemoryApi
    WRITE_PHYSICAL_MEMORY = 0x313E  # DbgKdWritePhysicalMemoryApi
    QUERY_SPECIAL_CALLS = 0x313F  # DbgKdQuerySpecialCallsApi
    SET_SPECIAL_CALL = 0x3140  # DbgKdSetSpecialCallApi
    CLEAR_SPECIAL_CALLS = 0x3141  # DbgKdClearSpecialCallsApi
    SET_INTERNAL_BREAKPOINT = 0x3142  # DbgKdSetInternalBreakPointApi
    GET_INTERNAL_BREAKPOINT = 0x3143  # DbgKdGetInternalBreakPointApi
    READ_IO_SPACE_EXTENDED = 0x3144  # DbgKdReadIoSpaceExtendedApi
    WRITE_IO_SPACE_EXTENDED = 0x3145  # DbgKdWriteIoSpaceExtendedApi
    GET_VERSION = 0x3146  # DbgKdGetVersionApi
    WRITE_BREAKPOINT_EX = 0x3147  # DbgKdWriteBreakPointExApi
    RESTORE_BREAKPOINT_EX = 0x3148  # DbgKdRestoreBreakPointExApi
    CAUSE_BUGCHECK = 0x3149  # DbgKdCauseBugCheckApi
    SWITCH_PROCESSOR = 0x3150  # DbgKdSwitchProcessor
    PAGE_IN = 0x3151  # DbgKdPageInApi (obsolete)
    READ_MSR = 0x3152  # DbgKdReadMachineSpecificRegister
    WRITE_MSR = 0x3153  # DbgKdWriteMachineSpecificRegister
    OLD_VLM1 = 0x3154  # OldVlm1 (obsolete)
    OLD_VLM2 = 0x3155  # OldVlm2 (obsolete)
    SEARCH_MEMORY = 0x3156  # DbgKdSearchMemoryApi
    GET_BUS_DATA = 0x3157  # DbgKdGetBusDataApi
    SET_BUS_DATA = 0x3158  # DbgKdSetBusDataApi
    CHECK_LOW_MEMORY = 0x3159  # DbgKdCheckLowMemoryApi
    CLEAR_ALL_INTERNAL_BREAKPOINTS = 0x315A  # DbgKdClearAllInternalBreakpointsApi
    FILL_MEMORY = 0x315B  # DbgKdFillMemoryApi
    QUERY_MEMORY = 0x315C  # DbgKdQueryMemoryApi
    SWITCH_PARTITION = 0x315D  # DbgKdSwitchPartition
    WRITE_CUSTOM_BREAKPOINT = 0x315E  # DbgKdWriteCustomBreakpointApi (UNCONFIRMED name)
    GET_CONTEXT_EX = 0x315F  # DbgKdGetContextExApi
    SET_CONTEXT_EX = 0x3160  # DbgKdSetContextExApi


# APIs after which the target resumes (or goes away) without sending a reply packet.
APIS_WITHOUT_REPLY = frozenset(
    {ManipulateApi.CONTINUE, ManipulateApi.CONTINUE2, ManipulateApi.REBOOT}
)


class DebugIoApi(IntEnum):
    """DBGKD_DEBUG_IO.ApiNumber (spec section 6)."""

    PRINT_STRING = 0x3230  # DbgKdPrintStringApi
    GET_STRING = 0x3231  # DbgKdGetStringApi


class TraceIoApi(IntEnum):
    PRINT_TRACE = 0x3330  # DbgKdPrintTraceApi


class FileIoApi(IntEnum):
    """DBGKD_FILE_IO.ApiNumber (spec section 7)."""

    CREATE_FILE = 0x3430  # DbgKdCreateFileApi
    READ_FILE = 0x3431  # DbgKdReadFileApi
    WRITE_FILE = 0x3432  # DbgKdWriteFileApi
    CLOSE_FILE = 0x3433  # DbgKdCloseFileApi


# --- Status codes (spec sections 4, 5, WDM headers) ---------------------------------------------


class NtStatus(IntEnum):
    SUCCESS = 0x00000000  # STATUS_SUCCESS
    PENDING = 0x00000103  # STATUS_PENDING (WinDbg leaves it in requests' output fields)
    DBG_EXCEPTION_HANDLED = 0x00010001  # DBG_EXCEPTION_HANDLED
    DBG_CONTINUE = 0x00010002  # DBG_CONTINUE
    BREAKPOINT = 0x80000003  # STATUS_BREAKPOINT
    SINGLE_STEP = 0x80000004  # STATUS_SINGLE_STEP
    WAKE_SYSTEM_DEBUGGER = 0x80000007  # STATUS_WAKE_SYSTEM_DEBUGGER
    DBG_EXCEPTION_NOT_HANDLED = 0x80010001  # DBG_EXCEPTION_NOT_HANDLED
    UNSUCCESSFUL = 0xC0000001  # STATUS_UNSUCCESSFUL
    ACCESS_VIOLATION = 0xC0000005  # STATUS_ACCESS_VIOLATION
    NO_SUCH_FILE = 0xC000000F  # STATUS_NO_SUCH_FILE
    ASSERTION_FAILURE = 0xC0000420  # STATUS_ASSERTION_FAILURE


class DbgStatus(IntEnum):
    """Argument of DbgBreakPointWithStatus, found in RCX at the break (spec section 4.1)."""

    CONTROL_C = 1  # DBG_STATUS_CONTROL_C
    SYSRQ = 2  # DBG_STATUS_SYSRQ
    BUGCHECK_FIRST = 3  # DBG_STATUS_BUGCHECK_FIRST
    BUGCHECK_SECOND = 4  # DBG_STATUS_BUGCHECK_SECOND
    FATAL = 5  # DBG_STATUS_FATAL
    DEBUG_CONTROL = 6  # DBG_STATUS_DEBUG_CONTROL
    WORKER = 7  # DBG_STATUS_WORKER


class MachineType(IntEnum):
    """DBGKD_GET_VERSION64.MachineType (IMAGE_FILE_MACHINE_*)."""

    I386 = 0x014C  # IMAGE_FILE_MACHINE_I386
    ARM = 0x01C0  # IMAGE_FILE_MACHINE_ARM
    ARMNT = 0x01C4  # IMAGE_FILE_MACHINE_ARMNT (winnt.h, not cross-checked)
    AMD64 = 0x8664  # IMAGE_FILE_MACHINE_AMD64
    ARM64 = 0xAA64  # IMAGE_FILE_MACHINE_ARM64 (winnt.h, not cross-checked)


class VersionFlags(IntFlag):
    """DBGKD_GET_VERSION64.Flags (DBGKD_VERS_FLAG_*)."""

    MP = 0x0001  # DBGKD_VERS_FLAG_MP: multiprocessor kernel
    DATA = 0x0002  # DBGKD_VERS_FLAG_DATA: DebuggerDataList is valid
    PTR64 = 0x0004  # DBGKD_VERS_FLAG_PTR64: 64-bit pointers
    NOMM = 0x0008  # DBGKD_VERS_FLAG_NOMM: no memory manager yet
    HSS = 0x0010  # DBGKD_VERS_FLAG_HSS: hardware stepping support
    PARTITIONS = 0x0020  # DBGKD_VERS_FLAG_PARTITIONS


# DBGKD_64BIT_PROTOCOL_VERSION2 and KD_SECONDARY_VERSION_AMD64_CONTEXT (spec section 5.2).
KD_PROTOCOL_VERSION = 6
KD_SECONDARY_VERSION_AMD64_CONTEXT = 2

# Where Windows keeps KUSER_SHARED_DATA on x64 (spec section 9).
KUSER_SHARED_DATA_ADDRESS = 0xFFFFF78000000000

# Bugcheck used by DbgKdCauseBugCheckApi and the `.crash` command.
MANUALLY_INITIATED_CRASH = 0xE2
