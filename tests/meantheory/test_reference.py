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
