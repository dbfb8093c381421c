"""The ``hmpo`` command line: means, verify, train, study, report.

A bad argument gets one line on stderr and exit status 2, for every subcommand, decided
here once: an argparse error (unknown option, a value of the wrong type, a missing
argument) and a ValueError raised by a command (the project's error for bad input: a
value out of range, an unknown preset, options that contradict each other) are both
answered ``hmpo <command>: error: <message>``. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

# name -> (module, one-line help). Modules live in rl/commands/ and are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "means": ("rl.commands.means", "power means of given values across p, with the mean iterations"),
    "verify": ("rl.commands.verify", "run every derivation and numeric check; print theorems and the claims ledger"),
    "train": ("rl.commands.train", "train a policy with a power-mean loss on a bandit or the tiny LM"),
    "study": ("rl.commands.study", "run a convergence study (spec file or preset), resumable"),
    "report": ("rl.commands.report", "verify the theory, run the default study, write reports/"),
}

#: the exit status of a bad argument (argparse's, and the shell convention for misuse)
BAD_ARGUMENT = 2


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def bad_argument(prog: str, message: str) -> None:
    """Print the one-line answer to a bad argument on stderr."""
    print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, answering an error with one line instead of the usage block.

    It still exits with status 2 (SystemExit), as argparse does; the subcommands' parsers
    are of this class too (``add_subparsers`` uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        bad_argument(self.prog, f"{message} (see {self.prog} --help)")
        raise SystemExit(BAD_ARGUMENT)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hmpo",
        description="HMPO toolkit: verified power means, proofs, power-mean policy losses and studies.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_, add_help=False)
            continue
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        p = sub.add_parser(name, help=help_, description=help_)
        mod.configure(p)
        p.set_defaults(_run=mod.run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``hmpo``; returns the exit status (an argparse error exits with 2 via SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, so that the message names the subcommand
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return BAD_ARGUMENT
    try:
        return int(args._run(args) or 0)
    except ValueError as exc:
        bad_argument(f"hmpo {args.command}", str(exc))
        return BAD_ARGUMENT


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
