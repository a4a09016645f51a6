"""The `cartd` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys

from cartd import attach_command, client_commands, demo, dump_command, links_command
from cartd.daemon import command as run_command
from cartd.decode import command as decode_command
from cartd.sim import command as sim_command
from cartd.tui import command as tui_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cartd",
        description="A Windows kernel-debugging crash cart: speaks KD to failing servers over "
        "serial or the network (KDNET), and records everything they say.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run",
        help="run the daemon (systemd runs it this way)",
        description="Run the daemon in the foreground: find KD traffic on the serial ports, "
        "connect to each target, keep it alive, record everything it says, and serve the "
        "control socket that `cartd status` and `cartd events` use.",
    )
    run_command.add_arguments(run)
    run.set_defaults(run=run_command.run)
    client_commands.add_arguments(commands)
    dump_command.add_arguments(commands)
    attach_command.add_arguments(commands)
    links_command.add_arguments(commands)
    tui = commands.add_parser(
        "tui",
        help="the full-screen view of the cart: targets, consoles, bugchecks, commands",
        description="Show every link and target, each target's DbgPrint console and events, "
        "and the bugcheck when there is one; break in, continue, reboot and give KDNET keys "
        "with a few keys (? lists them). Runs on the cart's screen and over `ssh -t`; it "
        "waits for the daemon if none is running.",
    )
    tui_command.add_arguments(tui)
    tui.set_defaults(run=tui_command.run)
    sim = commands.add_parser(
        "sim",
        help="serve a simulated x64 Windows target",
        description="Serve a simulated x64 Windows target that speaks KD over a serial line "
        "or KDNET: "
        "it boots, prints, loads drivers, answers a debugger and, if asked, bug checks.",
    )
    sim_command.add_arguments(sim)
    sim.set_defaults(run=sim_command.run)
    demo_parser = commands.add_parser(
        "demo",
        help="watch cartd debug a simulated target that bug checks",
        description="Start the daemon on a temporary state directory and a simulated Windows "
        "target on a new pseudo-terminal, paced like a 115200 baud null-modem cable, and show "
        "the events as they come: DbgPrint lines, module loads, stops and the bugcheck.",
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(run=demo.run)
    decode = commands.add_parser(
        "decode",
        help="decode a KDNET pcap/pcapng or a cartd serial wire.pcapng offline",
        description="Read a capture, decrypt its KDNET datagrams with the key (following the "
        "handshake to the data key) and print one line per datagram and KD packet, then a "
        "summary. cartd's own serial wire.pcapng files need no key.",
    )
    decode_command.add_arguments(decode)
    decode.set_defaults(run=decode_command.run)
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
