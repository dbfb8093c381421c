"""The declared analysis plan: parsing, validation, round trip, condition filters."""

from __future__ import annotations

import tomllib

import pytest

import rl.studies.plan as plan_module
from rl.studies.plan import Endpoint, matches, parse_plan
from rl.studies.spec import canonical_variant, parse_spec


def _plan(**tables):
    return parse_plan(tables, metric="exact_reward", alpha=0.05, canonical=canonical_variant)


def test_the_documented_plan_example_parses_into_a_spec():
    doc = plan_module.__doc__
    block = doc[doc.index('    [endpoints."samples_to_0.9"]'):doc.index("Claim kinds:")]
    data = tomllib.loads("\n".join(line[4:] for line in block.splitlines()))
    spec = parse_spec({"study": {"name": "doc", "metric": "exact_reward"}, "base": {"env": "seq-bandit"},
                       "grid": [{"variant": ["p=0", "p=-1"], "off_policy": ["1x1", "4x4"], "policy_lag": [0],
                                 "vocab": [8], "seeds": 5}], **data})
    p = spec.plan
    assert set(p.endpoints) == {"samples_to_0.9", "auc", "drawdown"}
    e = p.endpoints["samples_to_0.9"]
    assert (e.kind, e.threshold, e.relative, e.higher_is_better) == ("to_threshold", 0.9, True, False)
    assert e.margin_for(200.0) == pytest.approx(10.0)
    assert p.endpoints["drawdown"].higher_is_better is False and p.endpoints["auc"].higher_is_better
    (c,) = p.claims
    assert (c.variant, c.baseline, c.supports) == ("p=-1", None, "better")
    assert c.where == ({"off_policy": "4x4", "policy_lag": "0", "vocab": "8"},)
    assert p.regime.coincide_above == 0.95 and "16 optimizer updates" in p.confounds["off_policy"]
    assert p.controls[0].where == ({"off_policy": "1x1"},)
    assert parse_spec(spec.to_dict()).plan == p                            # round trip


def test_plan_errors_name_the_problem():
    ok = {"auc": {"kind": "mean", "margin": 0.01}}
    with pytest.raises(ValueError, match="margin"):
        _plan(endpoints={"auc": {"kind": "mean"}})
    with pytest.raises(ValueError, match="kind must be one of"):
        _plan(endpoints={"auc": {"kind": "area", "margin": 0.1}})
    with pytest.raises(ValueError, match="needs a threshold"):
        _plan(endpoints={"s": {"kind": "to_threshold", "margin": 0.1}})
    with pytest.raises(ValueError, match="lower-is-better"):
        _plan(endpoints={"d": {"kind": "max_drawdown", "margin": 0.1, "higher_is_better": True}})
    with pytest.raises(ValueError, match="not declared"):
        _plan(endpoints=ok, claims=[{"id": "a", "kind": "comparison", "variant": "p=-1", "endpoints": ["final"],
                                     "supports": "better"}])
    with pytest.raises(ValueError, match="supports must be"):
        _plan(endpoints=ok, claims=[{"id": "a", "kind": "comparison", "variant": "p=-1", "endpoints": ["auc"]}])
    with pytest.raises(ValueError, match="names its 'variant'"):
        _plan(endpoints=ok, claims=[{"id": "a", "kind": "comparison", "endpoints": ["auc"], "supports": "better"}])
    with pytest.raises(ValueError, match="factor"):
        _plan(endpoints=ok, claims=[{"id": "a", "kind": "interaction", "variant": "p=-1", "endpoints": ["auc"],
                                     "supports": "differs"}])
    with pytest.raises(ValueError, match="unique"):
        _plan(endpoints=ok, claims=[{"id": "a", "kind": "sweep", "endpoints": ["auc"], "supports": "monotone"}] * 2)
    with pytest.raises(ValueError, match="all be higher-is-better"):
        _plan(endpoints={**ok, "d": {"kind": "max_drawdown", "margin": 0.1}},
              claims=[{"id": "a", "kind": "sweep", "endpoints": ["auc", "d"], "supports": "monotone"}])
    with pytest.raises(ValueError, match="unknown keys"):
        _plan(regime={"ess": 0.9})
    with pytest.raises(ValueError, match="'reason'"):
        _plan(controls=[{"where": [{"env": "bandit"}]}])


def test_spec_check_holds_claims_to_the_grid():
    base = {"study": {"name": "x"}, "grid": [{"variant": ["p=0", "p=-1"], "off_policy": "4x4", "seeds": 5}],
            "endpoints": {"auc": {"kind": "mean", "margin": 0.01}}}
    claim = {"id": "a", "kind": "comparison", "variant": "p=-1", "endpoints": ["auc"], "supports": "better"}
    parse_spec({**base, "claims": [claim]})
    with pytest.raises(ValueError, match="no condition matches"):
        parse_spec({**base, "claims": [{**claim, "where": [{"off_policy": "1x1"}]}]})
    with pytest.raises(ValueError, match="does not run"):
        parse_spec({**base, "claims": [{**claim, "variant": "p=1"}]})
    with pytest.raises(ValueError, match="varies the factor"):
        parse_spec({**base, "claims": [{**claim, "kind": "interaction", "factor": "seq_len", "supports": "differs"}]})


def test_matches_and_endpoint_descriptions():
    cell = {"env": "seq-bandit", "off_policy": "4x4", "policy_lag": "2"}
    assert matches(cell, ())
    assert matches(cell, ({"off_policy": "4x4"},)) and not matches(cell, ({"off_policy": "1x1"},))
    assert matches(cell, ({"policy_lag": "0"}, {"policy_lag": "2"}))
    e = Endpoint(name="s", kind="to_threshold", metric="exact_reward", threshold=0.9, margin=0.05, relative=True,
                 higher_is_better=False)
    assert "first reaches 0.9" in e.describe() and "5% of the baseline" in e.describe()
    assert _plan(claims=[], endpoints={"f": {"kind": "final", "last": 10, "margin": 0.02}}).endpoints["f"].describe() \
        .startswith("mean of `exact_reward` over the last 10 steps")
