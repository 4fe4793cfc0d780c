"""``splitlearn`` command line: one module per subcommand, joined here."""

from __future__ import annotations

import argparse
import sys

from splitlearn.cli import attack, certs, compare, experiment, join, predict, report, reproduce, runs, serve, status, train

__all__ = ["main"]

COMMANDS = {
    "train": train, "predict": predict, "attack": attack, "report": report, "experiment": experiment, "reproduce": reproduce,
    "compare": compare, "serve": serve, "join": join, "status": status, "runs": runs, "certs": certs,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="splitlearn", description="Split learning across sites that never share raw data.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub)
    args = parser.parse_args(["train"] if argv is None and len(sys.argv) == 1 else argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Bad input: one clear line, not a traceback.
        print(f"splitlearn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
