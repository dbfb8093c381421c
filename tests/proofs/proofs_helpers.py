"""Helpers for the proofs tests (imported by path, like tests/meantheory/mt_helpers.py)."""

from __future__ import annotations

from hypothesis import strategies as st

from proofs.core import Drawer


class HypothesisDrawer(Drawer):
    """The Drawer interface over hypothesis' interactive data, so make_case serves both."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def float(self, lo: float, hi: float) -> float:
        return self.data.draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))
