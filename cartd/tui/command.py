"""`cartd tui`: start the TUI on this terminal (the cart's screen, or an SSH session)."""

from __future__ import annotations

import argparse
import sys

from cartd.client_commands import add_socket_arguments, socket_path
from cartd.config import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_socket_arguments(parser)
    parser.add_argument(
        "--target", metavar="ID", help="open this target's view first (an id from `cartd status`)"
    )


def run(args: argparse.Namespace) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(
            "cartd tui: needs a terminal; over SSH use `ssh -t CART cartd tui`. For a log "
            "of events without one, use `cartd events --follow`.",
            file=sys.stderr,
        )
        return 2
    try:
        path = socket_path(args)
    except ConfigError as error:
        print(f"cartd tui: {error}", file=sys.stderr)
        return 2
    # Textual is imported here, not at the top: the other commands start faster without it.
    from cartd.tui.app import CartdApp

    CartdApp(path, target=args.target).run()
    return 0
