"""The seeds' printed numbers and the checks that judge them (proofs/seeds.py)."""

from __future__ import annotations

from proofs.seeds import SEED_002_TABLE, table_violations


def test_seed_002_table_is_not_monotone():
    viol = table_violations(SEED_002_TABLE)
    assert any("H <= G violated" in v for v in viol)
    assert len(viol) >= 3
    monotone = [(p, float(2 ** p), "") for p in (-2.0, -1.0, 0.0, 1.0, 2.0)]
    assert table_violations(monotone) == []
