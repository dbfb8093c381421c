"""rl/cli.py: every subcommand answers a bad argument with one line on stderr and exit status 2.

The study and report commands are tested only through ``rl.cli.main`` (their modules are being
rebuilt); an argparse error exits through SystemExit(2), as argparse does, and a ValueError
raised by a command is returned as 2.
"""

from __future__ import annotations

import pytest

from rl.cli import main


def _exit_status(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


BAD = [
    # argparse errors: a missing argument, a value of the wrong type, an unknown option or choice
    ["means"],
    ["means", "1", "--steps", "x"],
    ["verify", "--seed", "x"],
    ["verify", "--bogus"],
    ["train", "--steps", "x"],
    ["train", "--env", "go"],
    ["study"],
    ["study", "smoke", "--workers", "x"],
    ["study", "smoke", "--executor", "nope"],
    ["report", "--executor", "nope"],
    ["report", "--workers", "x"],
    ["bogus"],
    # ValueErrors of the commands: values out of range, contradictory or unknown
    ["means", "1", "4", "--weights", "1"],
    ["means", "1", "-4"],
    ["verify", "--cases-scale", "-1"],
    ["verify", "--cases-scale", "nan"],
    ["verify", "--only", "ZZ"],
    ["train", "--threads", "0", "--steps", "1", "--no-progress"],
    ["train", "--resume", "--steps", "1", "--no-progress"],
    ["study", "nonexistent-preset", "--out", "{tmp}/study"],
    ["report", "--studies", "nonexistent-preset", "--out", "{tmp}/reports", "--study-dir", "{tmp}/studies", "--no-run"],
]


@pytest.mark.parametrize("argv", BAD, ids=[" ".join(a) for a in BAD])
def test_a_bad_argument_gets_one_line_and_exit_2(argv, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert _exit_status(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    command = argv[0] if argv[0] in ("means", "verify", "train", "study", "report") else None
    assert lines[0].startswith(f"hmpo {command}: " if command else "hmpo: "), lines[0]


def test_the_message_says_what_was_wrong(capsys):
    assert _exit_status(["verify", "--cases-scale", "0"]) == 2
    assert capsys.readouterr().err == "hmpo verify: error: --cases-scale: expected a positive number, got 0.0\n"
    assert _exit_status(["means", "1", "--steps", "x"]) == 2
    assert capsys.readouterr().err == ("hmpo means: error: argument --steps: invalid int value: 'x' "
                                       "(see hmpo means --help)\n")


def test_a_multi_line_message_is_joined_into_one(monkeypatch, capsys):
    from rl.commands import verify

    def bad(args):
        raise ValueError("first line\n  second line\n")

    monkeypatch.setattr(verify, "run", bad)
    assert _exit_status(["verify"]) == 2
    assert capsys.readouterr().err == "hmpo verify: error: first line second line\n"


def test_other_errors_keep_their_traceback(monkeypatch):
    """Only bad input (ValueError) is answered in one line; a bug still raises."""
    from rl.commands import verify

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(verify, "run", bug)
    with pytest.raises(KeyError):
        main(["verify"])
