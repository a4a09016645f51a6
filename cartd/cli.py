"""The `cartd` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys

from cartd import demo
from cartd.sim import command as sim_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cartd",
        description="A Windows kernel-debugging crash cart: speaks KD to failing servers over "
        "serial, USB or the network, and records everything they say.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sim = commands.add_parser(
        "sim",
        help="serve a simulated x64 Windows target",
        description="Serve a simulated x64 Windows target that speaks KD over a serial line: "
        "it boots, prints, loads drivers, answers a debugger and, if asked, bug checks.",
    )
    sim_command.add_arguments(sim)
    sim.set_defaults(run=sim_command.run)
    demo_parser = commands.add_parser(
        "demo",
        help="watch cartd debug a simulated target that bug checks",
        description="Start a simulated Windows target on a new pseudo-terminal, paced like a "
        "115200 baud null-modem cable, and show what cartd's KD host sees: DbgPrint lines, "
        "module loads, stops and the bugcheck, with its name and parameters.",
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(run=demo.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except BrokenPipeError:
        # The reader went away (`cartd demo | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return result


if __name__ == "__main__":
    sys.exit(main())
