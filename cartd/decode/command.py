"""`cartd decode FILE [--key KEY] [--json] [--summary-only]`: read a capture offline.

Prints one line per KDNET datagram (with the KD packet it carries), or per KD packet of a
cartd serial `wire.pcapng`, then a summary. Exit status: 0 when the capture was decoded;
1 for a file that is not a usable capture, a malformed or missing key, or a key that
authenticates nothing (then it is almost certainly the wrong key). The key is never printed,
not even in an error about it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from cartd.kd.kdnet.keys import KdnetKey, KdnetKeyError, parse_key

PROG = "cartd decode"

# `parse_key` quotes a word only when it cannot be part of a working key, but even that is
# close to the real key (a typo in one character), so quoted text is cut from its messages.
_QUOTED = re.compile(r""" ?('[^']*'|"[^"]*")""")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        metavar="FILE",
        type=Path,
        help="a pcap or pcapng capture of KDNET traffic, or a cartd serial wire.pcapng",
    )
    parser.add_argument(
        "--key",
        metavar="KEY",
        help="the KDNET key (w.x.y.z, as bcdedit /dbgsettings shows it); needed for KDNET "
        "captures, not for serial ones; never printed",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line, and a final {"summary": ...} object',
    )
    parser.add_argument("--summary-only", action="store_true", help="print only the summary")
    parser.epilog = (
        "Examples: cartd decode session.pcapng --key 1.2.3.4; cartd decode wire.pcapng --json. "
        "Exit status 1: the file is not a usable capture, the key is missing or malformed, "
        "or nothing authenticated (a wrong key)."
    )


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    try:
        key = parse_key(args.key) if args.key is not None else None
    except KdnetKeyError as exc:
        return _fail(f"the --key is malformed: {_QUOTED.sub('', str(exc))}")
    return _decode(args.file, key, as_json=args.json, summary_only=args.summary_only)


def _decode(path: Path, key: KdnetKey | None, *, as_json: bool, summary_only: bool) -> int:
    # The decoder reads captures with scapy, which takes a third of a second to import; every
    # other cartd command imports this module through cartd.cli and should not pay for it.
    from cartd.decode.decoder import CaptureDecoder
    from cartd.decode.kdnet import KdnetRecord
    from cartd.decode.output import kdnet_json, kdnet_text, serial_json, serial_text
    from cartd.decode.reader import CaptureError

    out = sys.stdout
    decoder = CaptureDecoder(path, key)
    try:
        for record in decoder.records():
            if summary_only:
                continue
            if isinstance(record, KdnetRecord):
                line = json.dumps(kdnet_json(record)) if as_json else kdnet_text(record)
            else:
                line = json.dumps(serial_json(record)) if as_json else serial_text(record)
            out.write(line + "\n")
    except CaptureError as exc:
        out.flush()
        return _fail(str(exc))
    summary = decoder.summary
    if as_json:
        out.write(json.dumps({"summary": summary.to_json()}) + "\n")
    else:
        if not summary_only:
            out.write("\n")
        out.write("\n".join(summary.text_lines()) + "\n")
    out.flush()
    if summary.key_probably_wrong:
        return _fail(
            "nothing authenticated: the key is probably wrong (check it with bcdedit "
            "/dbgsettings on the target)"
        )
    return 0
