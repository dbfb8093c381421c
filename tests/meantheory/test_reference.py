"""The mpmath oracles (meantheory/reference.py)."""

from __future__ import annotations

import mpmath

from meantheory import reference as ref


def test_oracle_is_self_consistent():
    """The oracle's series branch and its direct branch agree where both are valid."""
    u = [0.1, -0.4, 0.25, 1.0]
    with mpmath.workdps(120):
        p = mpmath.mpf("1e-13")
        direct = mpmath.log(mpmath.fsum(mpmath.exp(p * mpmath.mpf(v)) for v in u) / 4) / p
    assert abs(float(ref.mp_log_power_mean(u, 1e-13)) - float(direct)) < 1e-30


def test_zero_weights_and_masked_entries_are_outside_the_support():
    """The support is mask & (w > 0): the max/min at p = +-inf run over it only. For log-values
    [0, 5, -3] with weights [1, 0, 1], log M_{+inf} = 0 (the max over {0, -3}), not 5."""
    u, w = [0.0, 5.0, -3.0], [1.0, 0.0, 1.0]
    assert ref.mp_log_power_mean(u, mpmath.inf, w) == 0
    assert ref.mp_log_power_mean(u, -mpmath.inf, [1.0, 1.0, 0.0]) == 0
    assert ref.mp_log_power_mean(u, mpmath.inf, mask=[True, False, True]) == 0
    assert ref.mp_log_power_mean(u, -mpmath.inf, w) == -3
    # finite p: a zero weight adds nothing; the value is that of the support alone
    for p in (1000.0, 1e-13, 0.0, -2.0):
        assert abs(ref.mp_log_power_mean(u, p, w) - ref.mp_log_power_mean([0.0, -3.0], p)) < mpmath.mpf(10) ** -55
    pi = ref.mp_mean_weights(u, 2.0, w)
    assert pi[1] == 0 and abs(mpmath.fsum(pi) - 1) < mpmath.mpf(10) ** -55
    # the p-derivative of the support alone (its spread is 3, not 8)
    assert abs(ref.mp_dlog_power_mean_dp(u, 1e-13, w) - ref.mp_dlog_power_mean_dp([0.0, -3.0], 1e-13)) < mpmath.mpf(10) ** -40
