"""`cartd run`: start the daemon in the foreground (systemd runs it this way too)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from cartd.config import ConfigError, load_config
from cartd.control.server import ControlSocketError
from cartd.daemon.service import Daemon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="configuration file (default /etc/cartd/cartd.toml if it exists; "
        "every setting has a default)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="keep records here instead of the configured state_dir; the "
        "control socket is then DIR/control.sock",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="log every event (default: links, targets and trouble only)",
    )


def configure_logging(*, verbose: bool) -> None:
    # Under systemd stderr goes to the journal, which adds its own timestamps.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, state_dir_override=args.state_dir)
    except ConfigError as error:
        print(
            f"cartd: {error}\ncartd: not starting with a configuration it cannot read",
            file=sys.stderr,
        )
        return 2
    configure_logging(verbose=args.verbose)
    try:
        asyncio.run(Daemon(config).run())
    except ControlSocketError as error:
        print(f"cartd: {error}", file=sys.stderr)
        return 1
    return 0
