"""The ``hmpo`` command line: means, verify, train, study, report."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Modules live in rl/commands/ and are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "means": ("rl.commands.means", "power means of given values across p, with the mean iterations"),
    "verify": ("rl.commands.verify", "run every derivation and numeric check; print theorems and the claims ledger"),
    "train": ("rl.commands.train", "train a policy with a power-mean loss on a bandit or the tiny LM"),
    "study": ("rl.commands.study", "run a convergence study (spec file or preset), resumable"),
    "report": ("rl.commands.report", "verify the theory, run the default study, write reports/"),
}


def _available() -> dict[str, object]:
    mods = {}
    for name, (modname, _) in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
    return mods


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
