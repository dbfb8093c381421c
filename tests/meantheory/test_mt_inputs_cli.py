"""Bad input raises a ValueError that names the problem; inputs answered in kind; `hmpo means`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from meantheory import (
    arithmetic_harmonic_iteration,
    cumulant_series,
    dlog_power_mean_dp,
    gauss_agm,
    log_power_mean,
    mean_pair_iteration,
    mean_weights,
    power_mean,
)
from rl.cli import main

U = torch.tensor([[0.1, -0.5, 0.3], [1.0, 2.0, -1.0]], dtype=torch.float64)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: power_mean(torch.tensor([1.0, -2.0]), 1.0), r"x: .*>= 0.*-2\.0.*\(1,\)"),
        (lambda: power_mean([1.0, math.nan], 1.0), r"x: .*nan"),
        (lambda: log_power_mean(torch.tensor([0.0, math.nan]), 1.0), r"log_x: NaN at unmasked index \(1,\)"),
        (lambda: log_power_mean(torch.tensor([0.0, math.inf]), -1.0), r"log_x: \+inf"),
        (lambda: log_power_mean(U, math.nan), r"p: NaN"),
        (lambda: log_power_mean(U, torch.tensor([1.0, math.nan])), r"p: NaN at index \(1,\)"),
        (lambda: log_power_mean(U, True), r"p: .*bool"),
        (lambda: log_power_mean(U, 1.0, weights=torch.tensor([1.0, -1.0, 1.0])), r"weights: .*non-negative.*-1\.0"),
        (lambda: log_power_mean(U, 1.0, weights=torch.tensor([0.0, 0.0, 0.0])), r"weights: all weights of a row are zero"),
        (lambda: log_power_mean(U, 1.0, weights=torch.ones(4)), r"weights: shape \(4,\) does not broadcast"),
        (lambda: log_power_mean(U, 1.0, mask=torch.ones(3)), r"mask: expected a bool"),
        (lambda: log_power_mean(U, 1.0, mask=np.ones(3)), r"mask: expected booleans"),
        (lambda: log_power_mean(U, 1.0, mask=torch.ones(5, dtype=torch.bool)), r"mask: shape \(5,\) does not broadcast"),
        (lambda: log_power_mean(U, torch.ones(3)), r"p: shape \(3,\) does not broadcast to the reduced shape \(2,\)"),
        (lambda: log_power_mean(U, 1.0, dim=2), r"dim: 2 is out of range"),
        (lambda: log_power_mean(U, 1.0, dim=1.0), r"dim: expected an int"),
        (lambda: log_power_mean(torch.tensor(1.0), 1.0), r"0-d"),
        (lambda: log_power_mean([[1.0], [1.0, 2.0]], 1.0), r"log_x: (ragged|cannot be read)"),
        (lambda: log_power_mean(["a"], 1.0), r"log_x: expected numbers"),
        (lambda: log_power_mean(torch.tensor([True]), 1.0), r"log_x: .*bool"),
        (lambda: mean_weights(U, math.nan), r"p: NaN"),
        (lambda: dlog_power_mean_dp(U, 1.0, weights=-torch.ones(3)), r"weights"),
        (lambda: cumulant_series(U, 0.1, 0), r"order"),
        (lambda: cumulant_series(torch.tensor([-math.inf, 0.0]), 0.1, 2), r"-inf"),
        (lambda: arithmetic_harmonic_iteration(1.0, -2.0), r"b: .*> 0"),
        (lambda: arithmetic_harmonic_iteration(1.0, 2.0, steps=-1), r"steps"),
        (lambda: gauss_agm(0.0, 2.0), r"a: .*> 0"),
        (lambda: mean_pair_iteration([1.0, 2.0], steps=1.5), r"steps"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_masked_bad_values_are_not_errors():
    u = torch.tensor([0.0, math.nan, math.inf])
    m = torch.tensor([True, False, False])
    assert log_power_mean(u, 1.0, mask=m).item() == 0.0
    assert power_mean(torch.tensor([1.0, -5.0]), 1.0, mask=torch.tensor([True, False])).item() == 1.0
    # negative weights where masked are ignored too
    w = torch.tensor([1.0, -1.0, 2.0])
    assert log_power_mean(u, 1.0, mask=m, weights=w).item() == 0.0


def test_check_false_skips_the_checks():
    """check=False does no validation (and no device sync): bad values are the caller's."""
    v = log_power_mean(torch.tensor([0.0, math.nan]), 1.0, check=False)
    assert math.isnan(v.item())
    log_power_mean(U, 1.0, weights=torch.tensor([1.0, -1.0, 1.0]), check=False)  # no raise
    log_power_mean(U, torch.tensor([1.0, math.nan]), check=False)


def test_answered_in_kind():
    x = [[1.0, 2.0], [3.0, 4.0]]
    assert isinstance(log_power_mean(x, 1.0), list)
    assert isinstance(log_power_mean([0.0, 1.0], 1.0), float)
    out = log_power_mean(np.array(x), 1.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert isinstance(mean_weights(np.array(x), 2.0), np.ndarray)
    assert isinstance(dlog_power_mean_dp(x, 2.0), list)
    t = log_power_mean(torch.tensor(x, dtype=torch.float32), 1.0)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert np.allclose(log_power_mean(np.array(x), 1.0), np.log(np.mean(np.exp(x), axis=-1)), rtol=0, atol=1e-15)


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
