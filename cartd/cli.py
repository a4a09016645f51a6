"""The `cartd` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
