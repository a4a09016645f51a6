"""Windows bug check codes: symbolic names, and what the four parameters of the common ones mean.

A bugcheck reaches cartd as a bare number and four parameters (KiBugCheckData, or the
"*** Fatal System Error" DbgPrint); this module turns them into the words an engineer at the
cart expects, in the shape of WinDbg's ``!analyze -show``. It is pure data plus lookups.

Facts come from Microsoft's public "Bug check code reference" and "Kernel live dump code
reference" (repository MicrosoftDocs/windows-driver-docs, files
``windows-driver-docs-pr/debugger/bug-check-code-reference2.md``,
``kernel-live-dump-code-reference.md`` and the per-code ``bug-check-0x*.md`` pages, snapshot of
2025-11-12). Two typos of the index table are corrected from the per-code pages: 0xDF is
IMPERSONATING_WORKER_THREAD and 0x1D0 is ACPI_FIRMWARE_WATCHDOG_TIMEOUT. The parameter texts are
short restatements of those pages, not quotations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeAlias

# Bug check codes are ULONGs; KiBugCheckData[0] is a ULONG_PTR whose upper half is not part of
# the code, so every lookup masks first.
BUGCHECK_CODE_MASK: Final = 0xFFFF_FFFF
# Windows reports some bugchecks with bit 28 set (0x1000007E, 0x1000007F, 0x1000008E,
# 0x100000EA). The reference gives each "the same meaning and parameters" as the code without
# the bit, and WinDbg names them with an "_M" suffix; bugcheck_name() does the same for any code.
BUGCHECK_M_VARIANT_BIT: Final = 0x1000_0000
M_VARIANT_SUFFIX: Final = "_M"
# Bugcheck parameters are ULONG_PTRs: at most 64 bits.
_PARAMETER_MASK: Final = 0xFFFF_FFFF_FFFF_FFFF

ParameterMeanings: TypeAlias = tuple[str, str, str, str]

# --- Names ---------------------------------------------------------------------------------------
# Every code of the bug check code reference, plus the codes only the live dump code reference
# lists (marked "live dump": Windows writes a live dump and keeps running, so a cart normally
# never stops on them, but they do appear in dump headers and logs).

_NAMES: Final[dict[int, str]] = {
    # --- Classic NT codes, 0x01-0xFF -------------------------------------------------------------
    0x00000001: "APC_INDEX_MISMATCH",
    0x00000002: "DEVICE_QUEUE_NOT_BUSY",
    0x00000003: "INVALID_AFFINITY_SET",
    0x00000004: "INVALID_DATA_ACCESS_TRAP",
    0x00000005: "INVALID_PROCESS_ATTACH_ATTEMPT",
    0x00000006: "INVALID_PROCESS_DETACH_ATTEMPT",
    0x00000007: "INVALID_SOFTWARE_INTERRUPT",
    0x00000008: "IRQL_NOT_DISPATCH_LEVEL",
    0x00000009: "IRQL_NOT_GREATER_OR_EQUAL",
    0x0000000A: "IRQL_NOT_LESS_OR_EQUAL",
    0x0000000B: "NO_EXCEPTION_HANDLING_SUPPORT",
    0x0000000C: "MAXIMUM_WAIT_OBJECTS_EXCEEDED",
    0x0000000D: "MUTEX_LEVEL_NUMBER_VIOLATION",
    0x0000000E: "NO_USER_MODE_CONTEXT",
    0x0000000F: "SPIN_LOCK_ALREADY_OWNED",
    0x00000010: "SPIN_LOCK_NOT_OWNED",
    0x00000011: "THREAD_NOT_MUTEX_OWNER",
    0x00000012: "TRAP_CAUSE_UNKNOWN",
    0x00000013: "EMPTY_THREAD_REAPER_LIST",
    0x00000014: "CREATE_DELETE_LOCK_NOT_LOCKED",
    0x00000015: "LAST_CHANCE_CALLED_FROM_KMODE",
    0x00000016: "CID_HANDLE_CREATION",
    0x00000017: "CID_HANDLE_DELETION",
    0x00000018: "REFERENCE_BY_POINTER",
    0x00000019: "BAD_POOL_HEADER",
    0x0000001A: "MEMORY_MANAGEMENT",
    0x0000001B: "PFN_SHARE_COUNT",
    0x0000001C: "PFN_REFERENCE_COUNT",
    0x0000001D: "NO_SPIN_LOCK_AVAILABLE",
    0x0000001E: "KMODE_EXCEPTION_NOT_HANDLED",
    0x0000001F: "SHARED_RESOURCE_CONV_ERROR",
    0x00000020: "KERNEL_APC_PENDING_DURING_EXIT",
    0x00000021: "QUOTA_UNDERFLOW",
    0x00000022: "FILE_SYSTEM",
    0x00000023: "FAT_FILE_SYSTEM",
    0x00000024: "NTFS_FILE_SYSTEM",
    0x00000025: "NPFS_FILE_SYSTEM",
    0x00000026: "CDFS_FILE_SYSTEM",
    0x00000027: "RDR_FILE_SYSTEM",
    0x00000028: "CORRUPT_ACCESS_TOKEN",
    0x00000029: "SECURITY_SYSTEM",
    0x0000002A: "INCONSISTENT_IRP",
    0x0000002B: "PANIC_STACK_SWITCH",
    0x0000002C: "PORT_DRIVER_INTERNAL",
    0x0000002D: "SCSI_DISK_DRIVER_INTERNAL",
    0x0000002E: "DATA_BUS_ERROR",
    0x0000002F: "INSTRUCTION_BUS_ERROR",
    0x00000030: "SET_OF_INVALID_CONTEXT",
    0x00000031: "PHASE0_INITIALIZATION_FAILED",
    0x00000032: "PHASE1_INITIALIZATION_FAILED",
    0x00000033: "UNEXPECTED_INITIALIZATION_CALL",
    0x00000034: "CACHE_MANAGER",
    0x00000035: "NO_MORE_IRP_STACK_LOCATIONS",
    0x00000036: "DEVICE_REFERENCE_COUNT_NOT_ZERO",
    0x00000037: "FLOPPY_INTERNAL_ERROR",
    0x00000038: "SERIAL_DRIVER_INTERNAL",
    0x00000039: "SYSTEM_EXIT_OWNED_MUTEX",
    0x0000003A: "SYSTEM_UNWIND_PREVIOUS_USER",
    0x0000003B: "SYSTEM_SERVICE_EXCEPTION",
    0x0000003C: "INTERRUPT_UNWIND_ATTEMPTED",
    0x0000003D: "INTERRUPT_EXCEPTION_NOT_HANDLED",
    0x0000003E: "MULTIPROCESSOR_CONFIGURATION_NOT_SUPPORTED",
    0x0000003F: "NO_MORE_SYSTEM_PTES",
    0x00000040: "TARGET_MDL_TOO_SMALL",
    0x00000041: "MUST_SUCCEED_POOL_EMPTY",
    0x00000042: "ATDISK_DRIVER_INTERNAL",
    0x00000043: "NO_SUCH_PARTITION",
    0x00000044: "MULTIPLE_IRP_COMPLETE_REQUESTS",
    0x00000045: "INSUFFICIENT_SYSTEM_MAP_REGS",
    0x00000046: "DEREF_UNKNOWN_LOGON_SESSION",
    0x00000047: "REF_UNKNOWN_LOGON_SESSION",
    0x00000048: "CANCEL_STATE_IN_COMPLETED_IRP",
    0x00000049: "PAGE_FAULT_WITH_INTERRUPTS_OFF",
    0x0000004A: "IRQL_GT_ZERO_AT_SYSTEM_SERVICE",
    0x0000004B: "STREAMS_INTERNAL_ERROR",
    0x0000004C: "FATAL_UNHANDLED_HARD_ERROR",
    0x0000004D: "NO_PAGES_AVAILABLE",
    0x0000004E: "PFN_LIST_CORRUPT",
    0x0000004F: "NDIS_INTERNAL_ERROR",
    0x00000050: "PAGE_FAULT_IN_NONPAGED_AREA",
    0x00000051: "REGISTRY_ERROR",
    0x00000052: "MAILSLOT_FILE_SYSTEM",
    0x00000053: "NO_BOOT_DEVICE",
    0x00000054: "LM_SERVER_INTERNAL_ERROR",
    0x00000055: "DATA_COHERENCY_EXCEPTION",
    0x00000056: "INSTRUCTION_COHERENCY_EXCEPTION",
    0x00000057: "XNS_INTERNAL_ERROR",
    0x00000058: "FTDISK_INTERNAL_ERROR",
    0x00000059: "PINBALL_FILE_SYSTEM",
    0x0000005A: "CRITICAL_SERVICE_FAILED",
    0x0000005B: "SET_ENV_VAR_FAILED",
    0x0000005C: "HAL_INITIALIZATION_FAILED",
    0x0000005D: "UNSUPPORTED_PROCESSOR",
    0x0000005E: "OBJECT_INITIALIZATION_FAILED",
    0x0000005F: "SECURITY_INITIALIZATION_FAILED",
    0x00000060: "PROCESS_INITIALIZATION_FAILED",
    0x00000061: "HAL1_INITIALIZATION_FAILED",
    0x00000062: "OBJECT1_INITIALIZATION_FAILED",
    0x00000063: "SECURITY1_INITIALIZATION_FAILED",
    0x00000064: "SYMBOLIC_INITIALIZATION_FAILED",
    0x00000065: "MEMORY1_INITIALIZATION_FAILED",
    0x00000066: "CACHE_INITIALIZATION_FAILED",
    0x00000067: "CONFIG_INITIALIZATION_FAILED",
    0x00000068: "FILE_INITIALIZATION_FAILED",
    0x00000069: "IO1_INITIALIZATION_FAILED",
    0x0000006A: "LPC_INITIALIZATION_FAILED",
    0x0000006B: "PROCESS1_INITIALIZATION_FAILED",
    0x0000006C: "REFMON_INITIALIZATION_FAILED",
    0x0000006D: "SESSION1_INITIALIZATION_FAILED",
    0x0000006E: "SESSION2_INITIALIZATION_FAILED",
    0x0000006F: "SESSION3_INITIALIZATION_FAILED",
    0x00000070: "SESSION4_INITIALIZATION_FAILED",
    0x00000071: "SESSION5_INITIALIZATION_FAILED",
    0x00000072: "ASSIGN_DRIVE_LETTERS_FAILED",
    0x00000073: "CONFIG_LIST_FAILED",
    0x00000074: "BAD_SYSTEM_CONFIG_INFO",
    0x00000075: "CANNOT_WRITE_CONFIGURATION",
    0x00000076: "PROCESS_HAS_LOCKED_PAGES",
    0x00000077: "KERNEL_STACK_INPAGE_ERROR",
    0x00000078: "PHASE0_EXCEPTION",
    0x00000079: "MISMATCHED_HAL",
    0x0000007A: "KERNEL_DATA_INPAGE_ERROR",
    0x0000007B: "INACCESSIBLE_BOOT_DEVICE",
    0x0000007C: "BUGCODE_NDIS_DRIVER",
    0x0000007D: "INSTALL_MORE_MEMORY",
    0x0000007E: "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED",
    0x0000007F: "UNEXPECTED_KERNEL_MODE_TRAP",
    0x00000080: "NMI_HARDWARE_FAILURE",
    0x00000081: "SPIN_LOCK_INIT_FAILURE",
    0x00000082: "DFS_FILE_SYSTEM",
    0x00000085: "SETUP_FAILURE",
    0x0000008B: "MBR_CHECKSUM_MISMATCH",
    0x0000008E: "KERNEL_MODE_EXCEPTION_NOT_HANDLED",
    0x0000008F: "PP0_INITIALIZATION_FAILED",
    0x00000090: "PP1_INITIALIZATION_FAILED",
    0x00000092: "UP_DRIVER_ON_MP_SYSTEM",
    0x00000093: "INVALID_KERNEL_HANDLE",
    0x00000094: "KERNEL_STACK_LOCKED_AT_EXIT",
    0x00000096: "INVALID_WORK_QUEUE_ITEM",
    0x00000097: "BOUND_IMAGE_UNSUPPORTED",
    0x00000098: "END_OF_NT_EVALUATION_PERIOD",
    0x00000099: "INVALID_REGION_OR_SEGMENT",
    0x0000009A: "SYSTEM_LICENSE_VIOLATION",
    0x0000009B: "UDFS_FILE_SYSTEM",
    0x0000009C: "MACHINE_CHECK_EXCEPTION",
    0x0000009E: "USER_MODE_HEALTH_MONITOR",
    0x0000009F: "DRIVER_POWER_STATE_FAILURE",
    0x000000A0: "INTERNAL_POWER_ERROR",
    0x000000A1: "PCI_BUS_DRIVER_INTERNAL",
    0x000000A2: "MEMORY_IMAGE_CORRUPT",
    0x000000A3: "ACPI_DRIVER_INTERNAL",
    0x000000A4: "CNSS_FILE_SYSTEM_FILTER",
    0x000000A5: "ACPI_BIOS_ERROR",
    0x000000A7: "BAD_EXHANDLE",
    0x000000AB: "SESSION_HAS_VALID_POOL_ON_EXIT",  # live dump
    0x000000AC: "HAL_MEMORY_ALLOCATION",
    0x000000AD: "VIDEO_DRIVER_DEBUG_REPORT_REQUEST",
    0x000000B1: "BGI_DETECTED_VIOLATION",
    0x000000B4: "VIDEO_DRIVER_INIT_FAILURE",
    0x000000B8: "ATTEMPTED_SWITCH_FROM_DPC",
    0x000000B9: "CHIPSET_DETECTED_ERROR",
    0x000000BA: "SESSION_HAS_VALID_VIEWS_ON_EXIT",
    0x000000BB: "NETWORK_BOOT_INITIALIZATION_FAILED",
    0x000000BC: "NETWORK_BOOT_DUPLICATE_ADDRESS",
    0x000000BD: "INVALID_HIBERNATED_STATE",
    0x000000BE: "ATTEMPTED_WRITE_TO_READONLY_MEMORY",
    0x000000BF: "MUTEX_ALREADY_OWNED",
    0x000000C1: "SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION",
    0x000000C2: "BAD_POOL_CALLER",
    0x000000C4: "DRIVER_VERIFIER_DETECTED_VIOLATION",
    0x000000C5: "DRIVER_CORRUPTED_EXPOOL",
    0x000000C6: "DRIVER_CAUGHT_MODIFYING_FREED_POOL",
    0x000000C7: "TIMER_OR_DPC_INVALID",
    0x000000C8: "IRQL_UNEXPECTED_VALUE",
    0x000000C9: "DRIVER_VERIFIER_IOMANAGER_VIOLATION",
    0x000000CA: "PNP_DETECTED_FATAL_ERROR",
    0x000000CB: "DRIVER_LEFT_LOCKED_PAGES_IN_PROCESS",
    0x000000CC: "PAGE_FAULT_IN_FREED_SPECIAL_POOL",
    0x000000CD: "PAGE_FAULT_BEYOND_END_OF_ALLOCATION",
    0x000000CE: "DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS",
    0x000000CF: "TERMINAL_SERVER_DRIVER_MADE_INCORRECT_MEMORY_REFERENCE",
    0x000000D0: "DRIVER_CORRUPTED_MMPOOL",
    0x000000D1: "DRIVER_IRQL_NOT_LESS_OR_EQUAL",
    0x000000D2: "BUGCODE_ID_DRIVER",
    0x000000D3: "DRIVER_PORTION_MUST_BE_NONPAGED",
    0x000000D4: "SYSTEM_SCAN_AT_RAISED_IRQL_CAUGHT_IMPROPER_DRIVER_UNLOAD",
    0x000000D5: "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL",
    0x000000D6: "DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION",
    0x000000D7: "DRIVER_UNMAPPING_INVALID_VIEW",
    0x000000D8: "DRIVER_USED_EXCESSIVE_PTES",
    0x000000D9: "LOCKED_PAGES_TRACKER_CORRUPTION",
    0x000000DA: "SYSTEM_PTE_MISUSE",
    0x000000DB: "DRIVER_CORRUPTED_SYSPTES",
    0x000000DC: "DRIVER_INVALID_STACK_ACCESS",
    0x000000DE: "POOL_CORRUPTION_IN_FILE_AREA",
    0x000000DF: "IMPERSONATING_WORKER_THREAD",
    0x000000E0: "ACPI_BIOS_FATAL_ERROR",
    0x000000E1: "WORKER_THREAD_RETURNED_AT_BAD_IRQL",
    0x000000E2: "MANUALLY_INITIATED_CRASH",
    0x000000E3: "RESOURCE_NOT_OWNED",
    0x000000E4: "WORKER_INVALID",
    0x000000E6: "DRIVER_VERIFIER_DMA_VIOLATION",
    0x000000E7: "INVALID_FLOATING_POINT_STATE",
    0x000000E8: "INVALID_CANCEL_OF_FILE_OPEN",
    0x000000E9: "ACTIVE_EX_WORKER_THREAD_TERMINATION",
    0x000000EA: "THREAD_STUCK_IN_DEVICE_DRIVER",
    0x000000EB: "DIRTY_MAPPED_PAGES_CONGESTION",
    0x000000EC: "SESSION_HAS_VALID_SPECIAL_POOL_ON_EXIT",
    0x000000ED: "UNMOUNTABLE_BOOT_VOLUME",
    0x000000EF: "CRITICAL_PROCESS_DIED",
    0x000000F0: "STORAGE_MINIPORT_ERROR",
    0x000000F1: "SCSI_VERIFIER_DETECTED_VIOLATION",
    0x000000F2: "HARDWARE_INTERRUPT_STORM",
    0x000000F3: "DISORDERLY_SHUTDOWN",
    0x000000F4: "CRITICAL_OBJECT_TERMINATION",
    0x000000F5: "FLTMGR_FILE_SYSTEM",
    0x000000F6: "PCI_VERIFIER_DETECTED_VIOLATION",
    0x000000F7: "DRIVER_OVERRAN_STACK_BUFFER",
    0x000000F8: "RAMDISK_BOOT_INITIALIZATION_FAILED",
    0x000000F9: "DRIVER_RETURNED_STATUS_REPARSE_FOR_VOLUME_OPEN",
    0x000000FA: "HTTP_DRIVER_CORRUPTED",
    0x000000FC: "ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY",
    0x000000FD: "DIRTY_NOWRITE_PAGES_CONGESTION",
    0x000000FE: "BUGCODE_USB_DRIVER",
    0x000000FF: "RESERVE_QUEUE_OVERFLOW",
    # --- 0x100-0x1FF (Windows Vista and later) ---------------------------------------------------
    0x00000100: "LOADER_BLOCK_MISMATCH",
    0x00000101: "CLOCK_WATCHDOG_TIMEOUT",
    0x00000102: "DPC_WATCHDOG_TIMEOUT",
    0x00000103: "MUP_FILE_SYSTEM",
    0x00000104: "AGP_INVALID_ACCESS",
    0x00000105: "AGP_GART_CORRUPTION",
    0x00000106: "AGP_ILLEGALLY_REPROGRAMMED",
    0x00000108: "THIRD_PARTY_FILE_SYSTEM_FAILURE",
    0x00000109: "CRITICAL_STRUCTURE_CORRUPTION",
    0x0000010A: "APP_TAGGING_INITIALIZATION_FAILED",
    0x0000010C: "FSRTL_EXTRA_CREATE_PARAMETER_VIOLATION",
    0x0000010D: "WDF_VIOLATION",
    0x0000010E: "VIDEO_MEMORY_MANAGEMENT_INTERNAL",
    0x0000010F: "RESOURCE_MANAGER_EXCEPTION_NOT_HANDLED",
    0x00000111: "RECURSIVE_NMI",
    0x00000112: "MSRPC_STATE_VIOLATION",
    0x00000113: "VIDEO_DXGKRNL_FATAL_ERROR",
    0x00000114: "VIDEO_SHADOW_DRIVER_FATAL_ERROR",
    0x00000115: "AGP_INTERNAL",
    0x00000116: "VIDEO_TDR_FAILURE",
    0x00000117: "VIDEO_TDR_TIMEOUT_DETECTED",
    0x00000119: "VIDEO_SCHEDULER_INTERNAL_ERROR",
    0x0000011A: "EM_INITIALIZATION_FAILURE",
    0x0000011B: "DRIVER_RETURNED_HOLDING_CANCEL_LOCK",
    0x0000011C: "ATTEMPTED_WRITE_TO_CM_PROTECTED_STORAGE",
    0x0000011D: "EVENT_TRACING_FATAL_ERROR",
    0x0000011E: "TOO_MANY_RECURSIVE_FAULTS",
    0x0000011F: "INVALID_DRIVER_HANDLE",
    0x00000120: "BITLOCKER_FATAL_ERROR",
    0x00000121: "DRIVER_VIOLATION",
    0x00000122: "WHEA_INTERNAL_ERROR",
    0x00000123: "CRYPTO_SELF_TEST_FAILURE",
    0x00000124: "WHEA_UNCORRECTABLE_ERROR",
    0x00000125: "NMR_INVALID_STATE",
    0x00000126: "NETIO_INVALID_POOL_CALLER",
    0x00000127: "PAGE_NOT_ZERO",
    0x00000128: "WORKER_THREAD_RETURNED_WITH_BAD_IO_PRIORITY",
    0x00000129: "WORKER_THREAD_RETURNED_WITH_BAD_PAGING_IO_PRIORITY",
    0x0000012A: "MUI_NO_VALID_SYSTEM_LANGUAGE",
    0x0000012B: "FAULTY_HARDWARE_CORRUPTED_PAGE",
    0x0000012C: "EXFAT_FILE_SYSTEM",
    0x0000012D: "VOLSNAP_OVERLAPPED_TABLE_ACCESS",
    0x0000012E: "INVALID_MDL_RANGE",
    0x0000012F: "VHD_BOOT_INITIALIZATION_FAILED",
    0x00000130: "DYNAMIC_ADD_PROCESSOR_MISMATCH",
    0x00000131: "INVALID_EXTENDED_PROCESSOR_STATE",
    0x00000132: "RESOURCE_OWNER_POINTER_INVALID",
    0x00000133: "DPC_WATCHDOG_VIOLATION",
    0x00000134: "DRIVE_EXTENDER",
    0x00000135: "REGISTRY_FILTER_DRIVER_EXCEPTION",
    0x00000136: "VHD_BOOT_HOST_VOLUME_NOT_ENOUGH_SPACE",
    0x00000137: "WIN32K_HANDLE_MANAGER",
    0x00000138: "GPIO_CONTROLLER_DRIVER_ERROR",
    0x00000139: "KERNEL_SECURITY_CHECK_FAILURE",
    0x0000013A: "KERNEL_MODE_HEAP_CORRUPTION",
    0x0000013B: "PASSIVE_INTERRUPT_ERROR",
    0x0000013C: "INVALID_IO_BOOST_STATE",
    0x0000013D: "CRITICAL_INITIALIZATION_FAILURE",
    0x00000140: "STORAGE_DEVICE_ABNORMALITY_DETECTED",
    0x00000141: "VIDEO_ENGINE_TIMEOUT_DETECTED",  # live dump
    0x00000142: "VIDEO_TDR_APPLICATION_BLOCKED",  # live dump
    0x00000143: "PROCESSOR_DRIVER_INTERNAL",
    0x00000144: "BUGCODE_USB3_DRIVER",
    0x00000145: "SECURE_BOOT_VIOLATION",
    0x00000147: "ABNORMAL_RESET_DETECTED",
    0x00000149: "REFS_FILE_SYSTEM",
    0x0000014A: "KERNEL_WMI_INTERNAL",
    0x0000014B: "SOC_SUBSYSTEM_FAILURE",
    0x0000014C: "FATAL_ABNORMAL_RESET_ERROR",
    0x0000014D: "EXCEPTION_SCOPE_INVALID",
    0x0000014E: "SOC_CRITICAL_DEVICE_REMOVED",
    0x0000014F: "PDC_WATCHDOG_TIMEOUT",
    0x00000150: "TCPIP_AOAC_NIC_ACTIVE_REFERENCE_LEAK",
    0x00000151: "UNSUPPORTED_INSTRUCTION_MODE",
    0x00000152: "INVALID_PUSH_LOCK_FLAGS",
    0x00000153: "KERNEL_LOCK_ENTRY_LEAKED_ON_THREAD_TERMINATION",
    0x00000154: "UNEXPECTED_STORE_EXCEPTION",
    0x00000155: "OS_DATA_TAMPERING",
    0x00000156: "WINSOCK_DETECTED_HUNG_CLOSESOCKET_LIVEDUMP",  # live dump
    0x00000157: "KERNEL_THREAD_PRIORITY_FLOOR_VIOLATION",
    0x00000158: "ILLEGAL_IOMMU_PAGE_FAULT",
    0x00000159: "HAL_ILLEGAL_IOMMU_PAGE_FAULT",
    0x0000015A: "SDBUS_INTERNAL_ERROR",
    0x0000015B: "WORKER_THREAD_RETURNED_WITH_SYSTEM_PAGE_PRIORITY_ACTIVE",
    0x0000015C: "PDC_WATCHDOG_TIMEOUT_LIVEDUMP",  # live dump
    0x0000015D: "SOC_SUBSYSTEM_FAILURE_LIVEDUMP",  # live dump
    0x0000015E: "BUGCODE_NDIS_DRIVER_LIVE_DUMP",  # live dump
    0x0000015F: "CONNECTED_STANDBY_WATCHDOG_TIMEOUT_LIVEDUMP",  # live dump
    0x00000160: "WIN32K_ATOMIC_CHECK_FAILURE",
    0x00000161: "LIVE_SYSTEM_DUMP",  # live dump
    0x00000162: "KERNEL_AUTO_BOOST_INVALID_LOCK_RELEASE",
    0x00000163: "WORKER_THREAD_TEST_CONDITION",
    0x00000164: "WIN32K_CRITICAL_FAILURE",
    0x00000165: "CLUSTER_CSV_STATUS_IO_TIMEOUT_LIVEDUMP",  # live dump
    0x00000166: "CLUSTER_RESOURCE_CALL_TIMEOUT_LIVEDUMP",  # live dump
    0x00000167: "CLUSTER_CSV_SNAPSHOT_DEVICE_INFO_TIMEOUT_LIVEDUMP",  # live dump
    0x00000168: "CLUSTER_CSV_STATE_TRANSITION_TIMEOUT_LIVEDUMP",  # live dump
    0x00000169: "CLUSTER_CSV_VOLUME_ARRIVAL_LIVEDUMP",  # live dump
    0x0000016A: "CLUSTER_CSV_VOLUME_REMOVAL_LIVEDUMP",  # live dump
    0x0000016B: "CLUSTER_CSV_CLUSTER_WATCHDOG_LIVEDUMP",  # live dump
    0x0000016C: "INVALID_RUNDOWN_PROTECTION_FLAGS",
    0x0000016D: "INVALID_SLOT_ALLOCATOR_FLAGS",
    0x0000016E: "ERESOURCE_INVALID_RELEASE",
    0x0000016F: "CLUSTER_CSV_STATE_TRANSITION_INTERVAL_TIMEOUT_LIVEDUMP",  # live dump
    0x00000170: "CLUSTER_CSV_CLUSSVC_DISCONNECT_WATCHDOG",
    0x00000171: "CRYPTO_LIBRARY_INTERNAL_ERROR",
    0x00000173: "COREMSGCALL_INTERNAL_ERROR",
    0x00000174: "COREMSG_INTERNAL_ERROR",
    0x00000175: "PREVIOUS_FATAL_ABNORMAL_RESET_ERROR",  # live dump
    0x00000178: "ELAM_DRIVER_DETECTED_FATAL_ERROR",
    0x00000179: "CLUSTER_CLUSPORT_STATUS_IO_TIMEOUT_LIVEDUMP",  # live dump
    0x0000017B: "PROFILER_CONFIGURATION_ILLEGAL",
    0x0000017C: "PDC_LOCK_WATCHDOG_LIVEDUMP",  # live dump
    0x0000017D: "PDC_UNEXPECTED_REVOCATION_LIVEDUMP",  # live dump
    0x0000017E: "MICROCODE_REVISION_MISMATCH",
    0x00000187: "VIDEO_DWMINIT_TIMEOUT_FALLBACK_BDD",
    0x00000188: "CLUSTER_CSVFS_LIVEDUMP",  # live dump
    0x00000189: "BAD_OBJECT_HEADER",
    0x0000018B: "SECURE_KERNEL_ERROR",
    0x0000018C: "HYPERGUARD_VIOLATION",
    0x0000018D: "SECURE_FAULT_UNHANDLED",
    0x0000018E: "KERNEL_PARTITION_REFERENCE_VIOLATION",
    0x00000190: "WIN32K_CRITICAL_FAILURE_LIVEDUMP",  # live dump
    0x00000191: "PF_DETECTED_CORRUPTION",
    0x00000192: "KERNEL_AUTO_BOOST_LOCK_ACQUISITION_WITH_RAISED_IRQL",
    0x00000193: "VIDEO_DXGKRNL_LIVEDUMP",  # live dump
    0x00000195: "SMB_SERVER_LIVEDUMP",  # live dump
    0x00000196: "LOADER_ROLLBACK_DETECTED",
    0x00000197: "WIN32K_SECURITY_FAILURE",
    0x00000198: "UFX_LIVEDUMP",  # live dump
    0x00000199: "KERNEL_STORAGE_SLOT_IN_USE",
    0x0000019A: "WORKER_THREAD_RETURNED_WHILE_ATTACHED_TO_SILO",
    0x0000019B: "TTM_FATAL_ERROR",
    0x0000019C: "WIN32K_POWER_WATCHDOG_TIMEOUT",
    0x0000019D: "CLUSTER_SVHDX_LIVEDUMP",  # live dump
    0x000001A0: "TTM_WATCHDOG_TIMEOUT",
    0x000001A1: "WIN32K_CALLOUT_WATCHDOG_LIVEDUMP",  # live dump
    0x000001A2: "WIN32K_CALLOUT_WATCHDOG_BUGCHECK",
    0x000001A3: "CALL_HAS_NOT_RETURNED_WATCHDOG_TIMEOUT_LIVEDUMP",  # live dump
    0x000001A4: "DRIPS_SW_HW_DIVERGENCE_LIVEDUMP",  # live dump
    0x000001A5: "USB_DRIPS_BLOCKER_SURPRISE_REMOVAL_LIVEDUMP",  # live dump
    0x000001A6: "BLUETOOTH_ERROR_RECOVERY_LIVEDUMP",  # live dump
    0x000001A7: "SMB_REDIRECTOR_LIVEDUMP",  # live dump
    0x000001A8: "VIDEO_DXGKRNL_BLACK_SCREEN_LIVEDUMP",  # live dump
    0x000001A9: "DIRECTED_FX_TRANSITION_LIVEDUMP",  # live dump
    0x000001AA: "EXCEPTION_ON_INVALID_STACK",
    0x000001AB: "UNWIND_ON_INVALID_STACK",
    0x000001B0: "VIDEO_MINIPORT_FAILED_LIVEDUMP",  # live dump
    0x000001B8: "VIDEO_MINIPORT_BLACK_SCREEN_LIVEDUMP",  # live dump
    0x000001C4: "DRIVER_VERIFIER_DETECTED_VIOLATION_LIVEDUMP",  # live dump
    0x000001C5: "IO_THREADPOOL_DEADLOCK_LIVEDUMP",  # live dump
    0x000001C6: "FAST_ERESOURCE_PRECONDITION_VIOLATION",
    0x000001C7: "STORE_DATA_STRUCTURE_CORRUPTION",
    0x000001C8: "MANUALLY_INITIATED_POWER_BUTTON_HOLD",
    0x000001C9: "USER_MODE_HEALTH_MONITOR_LIVEDUMP",  # live dump
    0x000001CA: "SYNTHETIC_WATCHDOG_TIMEOUT",
    0x000001CB: "INVALID_SILO_DETACH",
    0x000001CC: "EXRESOURCE_TIMEOUT_LIVEDUMP",  # live dump
    0x000001CD: "INVALID_CALLBACK_STACK_ADDRESS",
    0x000001CE: "INVALID_KERNEL_STACK_ADDRESS",
    0x000001CF: "HARDWARE_WATCHDOG_TIMEOUT",
    0x000001D0: "ACPI_FIRMWARE_WATCHDOG_TIMEOUT",
    0x000001D1: "TELEMETRY_ASSERTS_LIVEDUMP",  # live dump
    0x000001D2: "WORKER_THREAD_INVALID_STATE",
    0x000001D3: "WFP_INVALID_OPERATION",
    0x000001D4: "UCMUCSI_LIVEDUMP",  # live dump
    0x000001D5: "DRIVER_PNP_WATCHDOG",
    0x000001D6: "WORKER_THREAD_RETURNED_WITH_NON_DEFAULT_WORKLOAD_CLASS",
    0x000001D7: "EFS_FATAL_ERROR",
    0x000001D8: "UCMUCSI_FAILURE",
    0x000001D9: "HAL_IOMMU_INTERNAL_ERROR",
    0x000001DA: "HAL_BLOCKED_PROCESSOR_INTERNAL_ERROR",
    0x000001DB: "IPI_WATCHDOG_TIMEOUT",
    0x000001DC: "DMA_COMMON_BUFFER_VECTOR_ERROR",
    0x000001DD: "BUGCODE_MBBADAPTER_DRIVER",
    0x000001DE: "BUGCODE_WIFIADAPTER_DRIVER",
    0x000001DF: "PROCESSOR_START_TIMEOUT",
    0x000001E1: "DEVICE_DIAGNOSTIC_LOG_LIVEDUMP",  # live dump
    0x000001E4: "VIDEO_DXGKRNL_SYSMM_FATAL_ERROR",
    0x000001E9: "ILLEGAL_ATS_INITIALIZATION",
    0x000001EA: "SECURE_PCI_CONFIG_SPACE_ACCESS_VIOLATION",
    0x000001EB: "DAM_WATCHDOG_TIMEOUT",
    0x000001ED: "HANDLE_ERROR_ON_CRITICAL_THREAD",
    0x000001F1: "KASAN_ENLIGHTENMENT_VIOLATION",
    0x000001F2: "KASAN_ILLEGAL_ACCESS",
    0x000001F5: "APPLICATION_HANG_KERNEL_LIVEDUMP",  # live dump
    # --- Codes outside the sequential ranges -----------------------------------------------------
    0x00000356: "XBOX_ERACTRL_CS_TIMEOUT",
    0x00000BFE: "BC_BLUETOOTH_VERIFIER_FAULT",
    0x00000BFF: "BC_BTHMINI_VERIFIER_FAULT",
    0x000021C8: "MANUALLY_INITIATED_BLACKSCREEN_HOTKEY_LIVE_DUMP",  # live dump
    0x00020001: "HYPERVISOR_ERROR",
    # --- Codes with high bits set (_M variants, status-style codes) ------------------------------
    0x1000007E: "SYSTEM_THREAD_EXCEPTION_NOT_HANDLED_M",
    0x1000007F: "UNEXPECTED_KERNEL_MODE_TRAP_M",
    0x1000008E: "KERNEL_MODE_EXCEPTION_NOT_HANDLED_M",
    0x100000EA: "THREAD_STUCK_IN_DEVICE_DRIVER_M",
    0x4000008A: "THREAD_TERMINATE_HELD_MUTEX",
    0xC0000218: "STATUS_CANNOT_LOAD_REGISTRY_FILE",
    0xC000021A: "WINLOGON_FATAL_ERROR",
    0xC0000221: "STATUS_IMAGE_CHECKSUM_MISMATCH",
    0xDEADDEAD: "MANUALLY_INITIATED_CRASH1",
}

BUGCHECK_NAMES: Final[Mapping[int, str]] = MappingProxyType(_NAMES)

# Codes in the kernel live dump code reference (some are also ordinary bugchecks: 0x117, 0x124,
# 0x144, 0x164, 0x187 are listed in both references).
LIVE_DUMP_CODES: Final = frozenset(
    {
        0xAB, 0x117, 0x124, 0x141, 0x142, 0x144, 0x156, 0x15C, 0x15D, 0x15E, 0x15F, 0x161,
        0x164, 0x165, 0x166, 0x167, 0x168, 0x169, 0x16A, 0x16B, 0x16F, 0x175, 0x179, 0x17C,
        0x17D, 0x187, 0x188, 0x190, 0x193, 0x195, 0x198, 0x19D, 0x1A1, 0x1A3, 0x1A4, 0x1A5,
        0x1A6, 0x1A7, 0x1A8, 0x1A9, 0x1B0, 0x1B8, 0x1C4, 0x1C5, 0x1C9, 0x1CC, 0x1D1, 0x1D4,
        0x1E1, 0x1F5, 0x21C8,
    }
)  # fmt: skip

# Older names under which the reference (or WinDbg) has published a code; accepted by
# bugcheck_code() so that logs written with the old name can be looked up.
BUGCHECK_ALIASES: Final[Mapping[str, int]] = MappingProxyType(
    {
        # The 2019 reference named 0xC000021A after its NTSTATUS; it is now WINLOGON_FATAL_ERROR.
        "STATUS_SYSTEM_PROCESS_TERMINATED": 0xC000021A,
    }
)


# --- Parameter meanings --------------------------------------------------------------------------
# For the codes seen most in the field (and a few more a server cart meets), what parameters
# 1..4 hold. "Depends on parameter 1" means the reference gives a table keyed on parameter 1;
# _CASES below refines the most useful of those tables.

_DEPENDS = "Depends on parameter 1"

_PARAMETERS: Final[dict[int, ParameterMeanings]] = {
    0x0A: (  # IRQL_NOT_LESS_OR_EQUAL
        "Virtual address that could not be accessed",
        "IRQL at the time of the fault (2 = DISPATCH_LEVEL)",
        "Operation: bit 0 set = write, bit 3 set = execute, 0 = read",
        "Instruction pointer at the time of the fault",
    ),
    0x19: (  # BAD_POOL_HEADER
        "Type of pool header violation",
        f"{_DEPENDS} (usually the pool entry being checked)",
        _DEPENDS,
        _DEPENDS,
    ),
    0x1A: (  # MEMORY_MANAGEMENT
        "Type of memory management violation",
        f"{_DEPENDS} (often an address, PTE or PFN)",
        _DEPENDS,
        _DEPENDS,
    ),
    0x1E: (  # KMODE_EXCEPTION_NOT_HANDLED
        "Exception code that was not handled",
        "Address where the exception occurred",
        "Exception information parameter 0 (access violation: 0 read, 1 write, 8 execute)",
        "Exception information parameter 1 (access violation: the address accessed)",
    ),
    0x24: (  # NTFS_FILE_SYSTEM
        "Source file id (high 16 bits) and line number (low 16 bits) of the failure",
        "Exception record address, if NtfsExceptionFilter is on the stack",
        "Context record address, if NtfsExceptionFilter is on the stack",
        "Reserved",
    ),
    0x3B: (  # SYSTEM_SERVICE_EXCEPTION
        "Exception that caused the bug check",
        "Address of the instruction that caused the bug check",
        "Address of the context record of the exception",
        "Not used (0)",
    ),
    0x4E: (  # PFN_LIST_CORRUPT
        "Type of PFN list violation",
        f"{_DEPENDS} (a list head, list entry or page frame number)",
        _DEPENDS,
        _DEPENDS,
    ),
    0x50: (  # PAGE_FAULT_IN_NONPAGED_AREA
        "Memory address referenced",
        "Operation: 0 read, 2 write, 0x10 execute (Arm: 1 write, 8 execute; "
        "before Windows 10 1507: 0 read, 1 write)",
        "Address of the instruction that referenced the memory, if known",
        "Type of page fault: 0 freed PTE, 2 no valid page table entry, 3 wrong session, "
        "4 non-canonical address, 0xF user address accessed from kernel mode",
    ),
    0x7A: (  # KERNEL_DATA_INPAGE_ERROR
        "Lock type held (1-4), or else the address of the PTE",
        "Error status (usually an I/O status code)",
        "Lock type 1: the current process; 2 or 3: 0; 3 or 4 when nonzero: the "
        "InPageSupport structure; with a PTE address in parameter 1: the PTE contents",
        "Virtual address that could not be paged in",
    ),
    0x7B: (  # INACCESSIBLE_BOOT_DEVICE
        "UNICODE_STRING with the ARC name of the boot device, or the device object that "
        "could not be mounted",
        "0",
        "0",
        "0",
    ),
    0x7E: (  # SYSTEM_THREAD_EXCEPTION_NOT_HANDLED
        "Exception code that was not handled",
        "Address where the exception occurred",
        "Address of the exception record",
        "Address of the context record",
    ),
    0x7F: (  # UNEXPECTED_KERNEL_MODE_TRAP
        "Trap number (0 divide error, 6 invalid opcode, 8 double fault, 0xD general protection)",
        "Reserved",
        "Reserved",
        "Reserved",
    ),
    0x8E: (  # KERNEL_MODE_EXCEPTION_NOT_HANDLED
        "Exception code that was not handled",
        "Address where the exception occurred",
        "Trap frame",
        "Reserved",
    ),
    0x9C: (  # MACHINE_CHECK_EXCEPTION
        "MCA bank number (Pentium-class MCE without MCA: low 32 bits of P5_MC_TYPE)",
        "Address of the MCA_EXCEPTION structure",
        "High 32 bits of the bank's MCi_STATUS (MCE only: high 32 bits of P5_MC_ADDR)",
        "Low 32 bits of the bank's MCi_STATUS (MCE only: low 32 bits of P5_MC_ADDR)",
    ),
    0x9F: (  # DRIVER_POWER_STATE_FAILURE
        "Type of violation (3 = a device object blocked an IRP for too long)",
        f"{_DEPENDS} (type 3: physical device object of the stack)",
        f"{_DEPENDS} (type 3: nt!_TRIAGE_9F_POWER)",
        f"{_DEPENDS} (type 3: the blocked IRP)",
    ),
    0xA0: (  # INTERNAL_POWER_ERROR
        "Type of power management failure",
        _DEPENDS,
        _DEPENDS,
        _DEPENDS,
    ),
    0xBE: (  # ATTEMPTED_WRITE_TO_READONLY_MEMORY
        "Virtual address of the attempted write",
        "PTE contents",
        "Reserved",
        "Reserved",
    ),
    0xC2: (  # BAD_POOL_CALLER
        "Type of pool request violation",
        f"{_DEPENDS} (often the pool address or the current IRQL)",
        _DEPENDS,
        _DEPENDS,
    ),
    0xC4: (  # DRIVER_VERIFIER_DETECTED_VIOLATION
        "Type of violation found by Driver Verifier",
        f"{_DEPENDS} (often the current IRQL)",
        _DEPENDS,
        _DEPENDS,
    ),
    0xC5: (  # DRIVER_CORRUPTED_EXPOOL
        "Memory referenced",
        "IRQL at the time of the reference",
        "0 = read, 1 = write",
        "Address of the instruction that referenced the memory",
    ),
    0xD1: (  # DRIVER_IRQL_NOT_LESS_OR_EQUAL
        "Memory referenced",
        "IRQL at the time of the reference",
        "0 = read, 1 = write, 2 or 8 = execute",
        "Address of the instruction that referenced the memory",
    ),
    0xD5: (  # DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL
        "Memory address referenced",
        "0 = read, 1 = write",
        "Address of the instruction that referenced the memory, if known",
        "Reserved",
    ),
    0xE2: (  # MANUALLY_INITIATED_CRASH (keyboard, NMI button or the debugger's .crash)
        "Not used",
        "Not used",
        "Not used",
        "Not used",
    ),
    0xEA: (  # THREAD_STUCK_IN_DEVICE_DRIVER
        "The stuck thread object",
        "The DEFERRED_WATCHDOG object",
        "Pointer to the name of the offending driver",
        "Times the intercepted bug check was hit (1 on the blue screen)",
    ),
    0xEF: (  # CRITICAL_PROCESS_DIED
        "The process object",
        "0 = a process terminated, 1 = a thread terminated",
        "Reserved",
        "Reserved",
    ),
    0xF4: (  # CRITICAL_OBJECT_TERMINATION
        "Type of the terminating object: 3 = process, 6 = thread",
        "The terminating object",
        "Image file name of the process",
        "Pointer to an ASCII string explaining the termination",
    ),
    0xFC: (  # ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY
        "Virtual address whose execution was attempted",
        "PTE contents",
        "Reserved",
        "Reserved",
    ),
    0x101: (  # CLOCK_WATCHDOG_TIMEOUT
        "Clock interrupt time-out interval, in nominal clock ticks",
        "0",
        "Address of the PRCB of the unresponsive processor",
        "Index of the hung processor",
    ),
    0x109: (  # CRITICAL_STRUCTURE_CORRUPTION
        "Reserved",
        "Reserved",
        "Reserved",
        "Type of the corrupted region (0 data, 1 function, 2 IDT, 3 GDT, 7 critical MSR, ...)",
    ),
    0x116: (  # VIDEO_TDR_FAILURE
        "Internal TDR recovery context, if available",
        "Pointer into the responsible device driver module (for example its owner tag)",
        "Error code of the last failed operation, if available",
        "Internal context dependent data, if available",
    ),
    0x119: (  # VIDEO_SCHEDULER_INTERNAL_ERROR
        "Type of violation (the only parameter of interest)",
        _DEPENDS,
        _DEPENDS,
        _DEPENDS,
    ),
    0x124: (  # WHEA_UNCORRECTABLE_ERROR
        "Type of error source (0 = machine check exception)",
        "Address of the WHEA_ERROR_RECORD structure",
        f"{_DEPENDS} (type 0: high 32 bits of MCi_STATUS of the failing bank)",
        f"{_DEPENDS} (type 0: low 32 bits of MCi_STATUS of the failing bank)",
    ),
    0x133: (  # DPC_WATCHDOG_VIOLATION
        "0 = a single DPC or ISR ran too long, 1 = too long at DISPATCH_LEVEL or above overall",
        "Type 0: DPC time count in ticks; type 1: the watchdog period",
        "Type 0: DPC time allotment in ticks; type 1: nt!DPC_WATCHDOG_GLOBAL_TRIAGE_BLOCK",
        "Type 0: nt!DPC_WATCHDOG_GLOBAL_TRIAGE_BLOCK; type 1: reserved",
    ),
    0x139: (  # KERNEL_SECURITY_CHECK_FAILURE
        "Type of corruption (2 = stack buffer overrun, 3 = corrupted LIST_ENTRY, ...)",
        "Address of the trap frame of the exception",
        "Address of the exception record",
        "Reserved",
    ),
    0x13A: (  # KERNEL_MODE_HEAP_CORRUPTION
        "Type of heap corruption",
        "Address of the heap that reported the corruption",
        "Address at which the corruption was detected",
        "Reserved",
    ),
    0x154: (  # UNEXPECTED_STORE_EXCEPTION
        "Store context or data manager",
        "Exception information",
        "Reserved",
        "Reserved",
    ),
    0x1CA: (  # SYNTHETIC_WATCHDOG_TIMEOUT
        "Time since the watchdog was last reset, in interrupt time",
        "Current interrupt time",
        "Current QPC timestamp",
        "Index of the clock processor",
    ),
    0xC000021A: (  # WINLOGON_FATAL_ERROR
        "String identifying the problem",
        "Error code",
        "Reserved",
        "Reserved",
    ),
}


# --- Cases keyed on parameter 1 ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameter1Case:
    """What one value of parameter 1 means, for a code whose other parameters depend on it."""

    cause: str
    # Meanings of parameters 2..4 in this case; None when the general texts apply.
    later_parameters: tuple[str, str, str] | None = None


def _case(cause: str, *later: str) -> Parameter1Case:
    """A case, with the meanings of parameters 2..4 if given (missing trailing ones: reserved)."""
    if not later:
        return Parameter1Case(cause=cause)
    p2, p3, p4 = (*later, "Reserved", "Reserved")[:3]
    return Parameter1Case(cause=cause, later_parameters=(p2, p3, p4))


_CASES: Final[dict[int, dict[int, Parameter1Case]]] = {
    0x19: {  # BAD_POOL_HEADER
        0x2: _case("Special pool pattern check failed", "Pool entry", "Pool block size", "0"),
        0x3: _case(
            "Pool free list is corrupt",
            "Pool entry",
            "Read-back flink of the free list",
            "Read-back blink of the free list",
        ),
        0x5: _case(
            "Adjacent pool entries have contradicting headers",
            "One of the pool entries",
            "Reserved",
            "The other pool entry",
        ),
        0x7: _case("Pool block header size is corrupt", "0", "Reserved", "Bad pool entry"),
        0x8: _case("Pool block header size is zero", "0", "Reserved", "Bad pool entry"),
        0xD: _case("Header of a freed pool block was modified after the free"),
        0xE: _case("Header of a freed pool block was modified after the free"),
        0xF: _case("Header of a freed pool block was modified after the free"),
        0x23: _case("Header of a freed pool block was modified after the free"),
        0x24: _case("Header of a freed pool block was modified after the free"),
        0x25: _case("Header of a freed pool block was modified after the free"),
        0x20: _case("Pool block header size is corrupt", "Pool entry expected", "Next pool entry"),
        0x21: _case(
            "Data after the pool block being freed is corrupt (overrun)",
            "Pool pointer being freed",
            "Bytes allocated for the block",
            "Corrupted value found after the block",
        ),
        0x22: _case("Freed address has no tracking entry (double or bogus free)", "Address"),
    },
    0x1A: {  # MEMORY_MANAGEMENT
        0x31: _case("Image relocation fix-up table or code stream corrupted (likely hardware)"),
        0x3F: _case(
            "In-page read failed its CRC check",
            "Page file offset",
            "CRC of the page",
            "Expected CRC",
        ),
        0x403: _case("Page table and PFN out of sync (likely hardware)"),
        0x404: _case(
            "PFN and PTE pointer disagree while deleting a system page",
            "Expected PTE",
            "PTE contents",
            "PTE of the PFN",
        ),
        0x411: _case("A PTE is corrupted", "Address of the PTE"),
        0x5100: _case("Allocation bitmap corrupted"),
        0x41790: _case("A page table page is corrupted", "PFN of the page table page"),
        0x41792: _case(
            "A corrupted PTE was found",
            "Address of the PTE",
            "Low part of the PTE",
            "High part of the PTE",
        ),
        0x61941: _case("Paging hierarchy corrupted", "Virtual address that faulted"),
    },
    0x4E: {  # PFN_LIST_CORRUPT
        0x01: _case("List head corrupted", "Corrupted ListHead value", "Pages available", "0"),
        0x02: _case(
            "List entry corrupted",
            "Entry being removed",
            "Highest physical page number",
            "Reference count of the entry",
        ),
        0x06: _case(
            "Hardware or prototype PTE corrupted",
            "Page frame number",
            "Prototype PTE",
            "PTE contents",
        ),
        0x07: _case(
            "A driver unlocked a page more often than it locked it",
            "Page frame number",
            "Current share count",
            "0",
        ),
        0x8D: _case("Free page list corrupted (likely hardware)", "Page frame number", "0", "0"),
        0x8F: _case("Free or zeroed page list head corrupted", "New page", "Old page", "0"),
        0x99: _case("PTE or PFN corrupted", "Page frame number", "Current page state", "0"),
        0x9A: _case(
            "A driver freed a page still locked for I/O",
            "Page frame number",
            "Current page state",
            "Reference count of the entry",
        ),
    },
    0x7F: {  # UNEXPECTED_KERNEL_MODE_TRAP: parameter 1 is the x86 trap number
        0x00: _case("Divide error"),
        0x01: _case("Debug trap"),
        0x03: _case("Breakpoint (int3)"),
        0x04: _case("Overflow (INTO)"),
        0x05: _case("BOUND range exceeded"),
        0x06: _case("Invalid opcode"),
        0x07: _case("Coprocessor not available"),
        0x08: _case("Double fault (often a kernel stack overflow)"),
        0x0A: _case("Invalid TSS"),
        0x0B: _case("Segment not present"),
        0x0C: _case("Stack fault"),
        0x0D: _case("General protection fault"),
        0x0F: _case("Reserved trap"),
        0x10: _case("Coprocessor error"),
        0x11: _case("Alignment check"),
    },
    0x9F: {  # DRIVER_POWER_STATE_FAILURE
        0x1: _case(
            "Device object being freed still has an uncompleted power request", "Device object"
        ),
        0x2: _case(
            "Device completed a system power IRP without calling PoStartNextPowerIrp",
            "Target device object, if available",
            "Device object",
            "Driver object, if available",
        ),
        0x3: _case(
            "A device object blocked a power IRP for too long",
            "Physical device object of the stack",
            "nt!_TRIAGE_9F_POWER",
            "The blocked IRP",
        ),
        0x4: _case(
            "Power transition timed out waiting for the PnP subsystem",
            "Time-out in seconds",
            "Thread holding the PnP lock",
            "nt!_TRIAGE_9F_PNP",
        ),
        0x5: _case(
            "Device did not finish a directed power transition in time",
            "Physical device object of the stack",
            "POP_FX_DEVICE object",
            "0",
        ),
        0x6: _case(
            "Device did not complete its directed power transition callback",
            "POP_FX_DEVICE object",
            "1 = directed power down, 0 = power up",
            "0",
        ),
        0x500: _case(
            "Device completed a system power IRP without calling PoStartNextPowerIrp",
            "Reserved",
            "Target device object, if available",
            "Device object",
        ),
    },
    0x124: {  # WHEA_UNCORRECTABLE_ERROR: parameter 1 is the error source type
        0x0: _case(
            "Machine check exception",
            "Address of the WHEA_ERROR_RECORD structure",
            "High 32 bits of MCi_STATUS of the failing bank",
            "Low 32 bits of MCi_STATUS of the failing bank",
        ),
        0x1: _case("Corrected machine check", "Address of the WHEA_ERROR_RECORD structure"),
        0x2: _case("Corrected platform error", "Address of the WHEA_ERROR_RECORD structure"),
        0x3: _case("Nonmaskable interrupt (NMI)", "Address of the WHEA_ERROR_RECORD structure"),
        0x4: _case("Uncorrectable PCI Express error", "Address of the WHEA_ERROR_RECORD structure"),
        0x5: _case("Generic hardware error", "Address of the WHEA_ERROR_RECORD structure"),
        0x6: _case("Initialization error", "Address of the WHEA_ERROR_RECORD structure"),
        0x7: _case("Boot error", "Address of the WHEA_ERROR_RECORD structure"),
        0x8: _case(
            "SCI-based generic hardware error", "Address of the WHEA_ERROR_RECORD structure"
        ),
        0xC: _case("Other error source (v2)", "Address of the WHEA_ERROR_RECORD structure"),
        0xD: _case("SCI-based GHESv2 error", "Address of the WHEA_ERROR_RECORD structure"),
        0xE: _case("BMC error", "Address of the WHEA_ERROR_RECORD structure"),
        0xF: _case(
            "Persistent memory address range scrub error",
            "Address of the WHEA_ERROR_RECORD structure",
        ),
        0x10: _case("Device driver error source", "Address of the WHEA_ERROR_RECORD structure"),
    },
    0x133: {  # DPC_WATCHDOG_VIOLATION
        0: _case(
            "A single DPC or ISR exceeded its time allotment",
            "DPC time count (ticks)",
            "DPC time allotment (ticks)",
            "nt!DPC_WATCHDOG_GLOBAL_TRIAGE_BLOCK",
        ),
        1: _case(
            "Too long at DISPATCH_LEVEL or above in total",
            "Watchdog period",
            "nt!DPC_WATCHDOG_GLOBAL_TRIAGE_BLOCK",
            "Reserved",
        ),
    },
    0x139: {  # KERNEL_SECURITY_CHECK_FAILURE: parameter 1 is the FAST_FAIL code
        0: _case("Stack-based buffer overrun (legacy /GS)"),
        1: _case("VTGuard: illegal virtual function table"),
        2: _case("Stack cookie check: stack-based buffer overrun (/GS)"),
        3: _case("Corrupted LIST_ENTRY (for example a double remove)"),
        5: _case("Invalid parameter passed to a function that treats it as fatal"),
        6: _case("Stack cookie not initialized by the loader"),
        7: _case("Fatal program exit requested"),
        8: _case("Compiler-inserted array bounds check failed"),
        9: _case("RtlQueryRegistryValues direct query of an untrusted hive without type check"),
        10: _case("Control flow guard: invalid indirect call target"),
        11: _case("Write guard: invalid memory write"),
        12: _case("Switch to an invalid fiber context"),
        13: _case("Invalid register context assigned"),
        14: _case("Invalid object reference count"),
        18: _case("Switch to an invalid jmp_buf context"),
        19: _case("Unsafe modification of read-only data"),
        20: _case("Cryptographic self-test failed"),
        21: _case("Invalid exception chain"),
        22: _case("Cryptographic library error"),
        23: _case("Invalid call from within DllMain"),
        24: _case("Invalid image base address"),
        25: _case("Failure while protecting a delay-load import"),
        26: _case("Call to an unsafe extension"),
        27: _case("Deprecated service invoked"),
        28: _case("Out-of-bounds buffer access"),
        29: _case("Corrupted RTL_BALANCED_NODE tree entry"),
        37: _case("Out-of-range switch jump table entry"),
        38: _case("longjmp to an invalid target"),
        39: _case("Export-suppressed call target could not be made valid"),
    },
    0xEF: {  # CRITICAL_PROCESS_DIED
        0: _case("A critical process terminated"),
        1: _case("A critical thread terminated"),
    },
    0xF4: {  # CRITICAL_OBJECT_TERMINATION
        3: _case("A critical process terminated"),
        6: _case("A critical thread terminated"),
    },
}


# --- Lookups -------------------------------------------------------------------------------------

_BY_NAME: Final[dict[str, int]] = {name: code for code, name in _NAMES.items()}
_UNKNOWN_PREFIX: Final = "UNKNOWN_BUGCHECK_0x"


def _m_variant_base(code: int) -> int | None:
    """The code an "_M" variant stands for (bit 28 set, no higher bit), if it is a known one."""
    if code >> 28 != 1:
        return None
    base = code & ~BUGCHECK_M_VARIANT_BIT
    return base if base in _NAMES else None


def canonical_bugcheck_code(code: int) -> int:
    """``code`` masked to 32 bits, with an "_M" variant of a known code folded onto that code."""
    code &= BUGCHECK_CODE_MASK
    base = _m_variant_base(code)
    return code if base is None else base


def bugcheck_name(code: int) -> str:
    """Symbolic name of a bug check code, e.g. 0x50 -> "PAGE_FAULT_IN_NONPAGED_AREA".

    The code is masked to 32 bits. An "_M" variant (0x1000_0000 | code) of a known code gets that
    code's name with the suffix "_M"; anything else unknown gets "UNKNOWN_BUGCHECK_0x%08X".
    """
    code &= BUGCHECK_CODE_MASK
    name = _NAMES.get(code)
    if name is not None:
        return name
    base = _m_variant_base(code)
    if base is not None:
        return _NAMES[base] + M_VARIANT_SUFFIX
    return f"{_UNKNOWN_PREFIX}{code:08X}"


def bugcheck_code(name: str) -> int | None:
    """The code for a symbolic name (the inverse of bugcheck_name, also for published aliases,
    "_M" names and "UNKNOWN_BUGCHECK_0x..." strings); None when the name is not known."""
    name = name.strip().upper()
    code = _BY_NAME.get(name, BUGCHECK_ALIASES.get(name))
    if code is not None:
        return code
    if name.endswith(M_VARIANT_SUFFIX):
        base = _BY_NAME.get(name.removesuffix(M_VARIANT_SUFFIX))
        if base is not None and base < BUGCHECK_M_VARIANT_BIT:
            return base | BUGCHECK_M_VARIANT_BIT
    if name.startswith(_UNKNOWN_PREFIX.upper()):
        digits = name[len(_UNKNOWN_PREFIX) :]
        if 1 <= len(digits) <= 8 and all(c in "0123456789ABCDEF" for c in digits):
            return int(digits, 16)
    return None


def bugcheck_parameter_meanings(
    code: int, *, parameter1: int | None = None
) -> ParameterMeanings | None:
    """What parameters 1..4 of ``code`` mean, or None if this table does not describe the code.

    Given ``parameter1``, the texts for parameters 2..4 are those of that case when the reference
    has a table keyed on parameter 1 and the case is in ours.
    """
    base = canonical_bugcheck_code(code)
    general = _PARAMETERS.get(base)
    if general is None:
        return None
    if parameter1 is not None:
        case = _CASES.get(base, {}).get(parameter1 & _PARAMETER_MASK)
        if case is not None and case.later_parameters is not None:
            return (general[0], *case.later_parameters)
    return general


def bugcheck_cause(code: int, parameter1: int) -> str | None:
    """One line saying what this value of parameter 1 means for ``code``, when it is known."""
    case = _CASES.get(canonical_bugcheck_code(code), {}).get(parameter1 & _PARAMETER_MASK)
    return None if case is None else case.cause


def described_codes() -> frozenset[int]:
    """Codes for which bugcheck_parameter_meanings() has texts."""
    return frozenset(_PARAMETERS)


# --- One recorded bugcheck -----------------------------------------------------------------------

_POINTER_SIZES: Final = (4, 8)


@dataclass(frozen=True, slots=True, kw_only=True)
class BugcheckInfo:
    """A bugcheck as the target reported it: code, the four parameters and the code's name.

    ``name`` defaults to bugcheck_name(code); pass it only to keep a name read elsewhere.
    """

    code: int
    parameters: tuple[int, int, int, int]
    name: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.code <= BUGCHECK_CODE_MASK:
            raise ValueError(f"bug check code {self.code:#x} does not fit in 32 bits")
        if len(self.parameters) != 4:
            raise ValueError(f"a bugcheck has 4 parameters, got {len(self.parameters)}")
        for index, value in enumerate(self.parameters, start=1):
            if not 0 <= value <= _PARAMETER_MASK:
                raise ValueError(f"parameter {index} ({value:#x}) does not fit in 64 bits")
        if not self.name:
            # Frozen: the dataclass machinery itself sets fields this way.
            object.__setattr__(self, "name", bugcheck_name(self.code))

    def __str__(self) -> str:
        """One line for logs, the way the blue screen and the DbgPrint show it."""
        parameters = ", ".join(f"{value:#x}" for value in self.parameters)
        return f"{self.code:#010x} {self.name} ({parameters})"

    @property
    def parameter_meanings(self) -> ParameterMeanings | None:
        return bugcheck_parameter_meanings(self.code, parameter1=self.parameters[0])

    @property
    def cause(self) -> str | None:
        return bugcheck_cause(self.code, self.parameters[0])

    def describe(self, *, pointer_size: int = 8) -> str:
        """Multi-line text in the manner of WinDbg's ``!analyze``::

            DRIVER_IRQL_NOT_LESS_OR_EQUAL (d1)
            Arguments:
            Arg1: 0000000000000008, Memory referenced
            ...

        Parameters are printed with ``2 * pointer_size`` hex digits (8 on x86).
        """
        if pointer_size not in _POINTER_SIZES:
            raise ValueError(f"pointer_size must be 4 or 8, not {pointer_size}")
        lines = [f"{self.name} ({self.code:x})"]
        cause = self.cause
        if cause is not None:
            lines.append(f"Cause: {cause}")
        lines.append("Arguments:")
        meanings = self.parameter_meanings
        width = 2 * pointer_size
        for index, value in enumerate(self.parameters):
            line = f"Arg{index + 1}: {value:0{width}x}"
            if meanings is not None:
                line += f", {meanings[index]}"
            lines.append(line)
        return "\n".join(lines)
