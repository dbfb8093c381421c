"""`hmpo means` (rl/commands/means.py): the table, the JSON, options and bad arguments."""

from __future__ import annotations

import json
import math

from rl.cli import main


def test_cli_means_table(capsys):
    assert main(["means", "1", "2", "4", "8"]) == 0
    out = capsys.readouterr().out
    assert "Power means" in out and "geometric" in out
    assert "sqrt(A*H)" in out and "Gauss AGM" in out
    assert "monotone non-decreasing in p: True" in out


def test_cli_means_json_is_monotone_and_exact(capsys):
    assert main(["means", "1", "2", "4", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    means = [r["mean"] for r in res["power_means"]]
    assert all(a <= b for a, b in zip(means, means[1:]))
    assert res["monotone_in_p"] is True
    assert abs(res["arithmetic"] - 3.75) < 1e-15
    assert abs(res["geometric"] - 8 ** 0.5) < 1e-15
    assert abs(res["harmonic"] - 32 / 15) < 1e-15
    assert abs(res["sqrt_AH"] - math.sqrt(3.75 * 32 / 15)) < 1e-15
    assert res["min"] == 1.0 and res["max"] == 8.0
    # (1, 2, 4, 8) is symmetric in log space: sqrt(A H) = G, the seed's lucky example
    assert abs(res["gap_sqrt_AH_minus_G"]) < 1e-14


def test_cli_means_gap_for_skewed_values(capsys):
    assert main(["means", "1", "1", "4", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["gap_sqrt_AH_minus_G"] > 0
    assert abs(res["sqrt_AH"] - math.sqrt(8 / 3)) < 1e-15
    assert abs(res["geometric"] - 4 ** (1 / 3)) < 1e-15


def test_cli_means_options_and_errors(capsys):
    assert main(["means", "1", "4", "--p", "-1", "1", "--weights", "1", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["p"] for r in res["power_means"]] == [-1.0, 1.0]
    assert abs(res["power_means"][1]["mean"] - 3.25) < 1e-15
    assert main(["means", "1", "4", "--weights", "1"]) == 2
    assert "weights" in capsys.readouterr().err
    assert main(["means", "1", "-4"]) == 2
    assert ">= 0" in capsys.readouterr().err
