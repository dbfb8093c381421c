"""Per-run endpoints on curves whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rl.studies.endpoints import EndpointValue, consumed, crossing, endpoint_value, max_drawdown, trailing_mean
from rl.studies.plan import Endpoint


def _record(**cols) -> dict:
    return {"run_id": "r", "metrics": {k: list(v) for k, v in cols.items()}}


def test_crossing_interpolates_and_censors():
    t = np.arange(60.0)
    y = 1 - np.exp(-t / 10)
    # 1 - exp(-t/10) = 0.5 at t = 10 ln 2 = 6.931; linear between t = 6 and 7
    exact = 6 + (0.5 - y[6]) / (y[7] - y[6])
    assert crossing(y, t, 0.5).value == pytest.approx(exact, rel=1e-12)
    assert abs(exact - 10 * math.log(2)) < 0.01                            # the interpolation is close to the truth
    assert crossing(y, t * 32, 0.5).value == pytest.approx(32 * exact)     # in the x it is given
    assert crossing(y, t, 2.0) == EndpointValue(59.0, True)                # never: right-censored at the budget
    assert crossing(np.array([0.6, 0.7]), np.array([0.0, 1.0]), 0.5) == EndpointValue(0.0)   # there at once
    # a metric logged every other step (NaN between evaluations): interpolated between the two
    # evaluations around the crossing, 0 + (0.5 - 0.1) / (0.9 - 0.1) * (2 - 0) = 1.0
    assert crossing(np.array([0.1, np.nan, 0.9]), np.array([0.0, 1.0, 2.0]), 0.5) == EndpointValue(1.0)
    # J every 3 steps: 0.3 at x = 3, 0.7 at x = 6 -> 3 + 3 (0.6 - 0.3) / (0.7 - 0.3) = 5.25
    y3 = np.array([0.2, np.nan, np.nan, 0.3, np.nan, np.nan, 0.7])
    assert crossing(y3, np.arange(7.0), 0.6).value == pytest.approx(5.25, rel=1e-14)
    assert crossing(np.array([np.nan, 0.7]), np.array([0.0, 1.0]), 0.5) == EndpointValue(1.0)  # nothing before it
    with pytest.raises(ValueError, match="shape"):
        crossing(y, t[:3], 0.5)


def test_max_drawdown_is_the_largest_fall_below_the_running_best():
    rise = np.minimum(np.arange(40) / 20, 1.0)
    assert max_drawdown(rise) == 0.0                                        # never falls
    assert max_drawdown(np.concatenate([rise, np.zeros(20)])) == 1.0
    assert max_drawdown(np.concatenate([rise, 0.45 * np.ones(20)])) == pytest.approx(0.55)
    assert max_drawdown(np.linspace(0.3, 0.02, 60)) == pytest.approx(0.28)  # a warm start that RL drove down
    assert max_drawdown(np.append(rise, np.nan)) == math.inf                # ended non-finite
    assert max_drawdown(np.zeros(30)) == 0.0                                 # never learned: nothing to lose
    plateau = 0.9 + 0.02 * np.sin(np.arange(80))                             # noise on a plateau: a small drawdown
    assert max_drawdown(np.concatenate([rise * 0.9, plateau])) == pytest.approx(0.04, abs=1e-3)
    # a trailing window smooths one bad step: 1, 1, 1, 0, 1, 1 has drawdown 1, its 3-step mean 1/3
    assert max_drawdown([1, 1, 1, 0, 1, 1]) == 1.0
    assert max_drawdown([1, 1, 1, 0, 1, 1], window=3) == pytest.approx(1 / 3)
    assert max_drawdown([0.9, 0.1, 0.5, 0.6, 0.7], window=3) == pytest.approx(0.5 - 0.4)  # full windows only
    assert math.isnan(max_drawdown([])) and math.isnan(max_drawdown([1.0], window=3))
    np.testing.assert_allclose(trailing_mean([1, np.nan, 3, 5], 2), [1, 3, 4])


def test_the_declared_collapse_rule_does_not_fire_on_sampling_noise():
    # The tiny-LM preset declares collapse = a fall of 0.15 of the 10-step mean of the sampled reward.
    # Noise-only runs at its sampling noise (64 samples of a 0.25 success rate: sd 0.054 per step,
    # 80 steps, a flat true reward) must not trigger it: over 2000 such runs the largest drawdown
    # stays well below 0.15 (a fall of 0.15 is 9 sd of a 10-step mean; the windows are full ones only:
    # a mean over the first few steps would be one noisy batch).
    from rl.studies.presets import PRESETS

    ep = PRESETS["tiny-lm-addition"]["endpoints"]["drawdown"]
    window, collapse = ep["window"], ep["collapse"]
    rng = np.random.default_rng(0)
    sd = math.sqrt(0.25 * 0.75 / 64)
    draws = np.array([max_drawdown(0.25 + sd * rng.standard_normal(80), window) for _ in range(2000)])
    # measured: median 0.059, 99th percentile 0.099, largest 0.119 of the 2000
    assert draws.max() < collapse and np.quantile(draws, 0.99) < 0.8 * collapse, (draws.max(), np.quantile(draws, 0.99))
    # and it does fire on a real collapse of that size within the same noise
    fall = np.concatenate([np.full(40, 0.35), np.full(40, 0.15)]) + sd * rng.standard_normal(80)
    assert max_drawdown(fall, window) >= collapse


def test_consumed_shifts_the_samples_column_by_one_step():
    # the trainer logs a step's metrics before its update: row t reflects the samples of steps < t
    rec = _record(samples=[32, 64, 96])
    np.testing.assert_array_equal(consumed(rec, "samples", 3), [0, 32, 64])
    np.testing.assert_array_equal(consumed(rec, "steps", 3), [0, 1, 2])
    with pytest.raises(ValueError, match="samples"):
        consumed(_record(step=[1, 2]), "samples", 2)


def test_endpoint_value_reads_exact_columns():
    rec = _record(exact_reward=[0.1, 0.5, 0.9, 0.8], samples=[32, 64, 96, 128], lo=[0.2, 0.2, 0.1, 0.1],
                  hi=[0.05, 0.05, 0.05, 0.05])
    mk = lambda **kw: Endpoint(name="e", metric="exact_reward", margin=0.01, **kw)  # noqa: E731
    assert endpoint_value(mk(kind="mean"), rec).value == pytest.approx(0.575)
    assert endpoint_value(mk(kind="final"), rec).value == 0.8
    assert endpoint_value(mk(kind="final", last=2), rec).value == pytest.approx(0.85)
    assert endpoint_value(mk(kind="median"), rec).value == pytest.approx(0.65)
    # 0.7 is crossed between rows 2 (x = 32, y = 0.5) and 3 (x = 64, y = 0.9): 32 + 0.5 * 32
    assert endpoint_value(mk(kind="to_threshold", threshold=0.7), rec) == EndpointValue(48.0)
    assert endpoint_value(mk(kind="to_threshold", threshold=0.95), rec) == EndpointValue(96.0, True)
    assert endpoint_value(mk(kind="max_drawdown"), rec).value == pytest.approx(0.1)
    diff = Endpoint(name="d", kind="mean", metric="lo", minus="hi", margin=0.01)
    assert endpoint_value(diff, rec).value == pytest.approx(0.15 - 0.05)
    with pytest.raises(ValueError, match="needs the column 'missing'"):
        endpoint_value(Endpoint(name="m", kind="mean", metric="missing", margin=0.1), rec)
