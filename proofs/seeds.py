"""Numbers printed in the seed documents, transcribed verbatim (seed 002's encoding is garbled,
its numbers are not), and the programmatic checks that judge them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SEED_002_TABLE", "SEED_002_AGM", "table_violations", "SEED_FILES"]

SEED_FILES = {
    "000": "seeds/000_0c02580418e12e10.txt (research notes)",
    "001": "seeds/001_78b2fd6b2f00f230.txt (README of the hobby implementation)",
    "002": "seeds/002_9fe3976db1b21632.txt (status report)",
}

#: seed 002, "Power Mean Framework": (p, printed M_p, printed label). Its input is not printed.
SEED_002_TABLE: list[tuple[float, float, str]] = [
    (-2.0, 3.690538, "very conservative"),
    (-1.0, 11.670505, "harmonic - conservative"),
    (-0.5, 116.705040, "moderate"),
    (0.0, 1.009176, "geometric - balanced"),
    (0.5, 0.011671, "moderate aggressive"),
    (1.0, 0.116705, "arithmetic - aggressive"),
    (2.0, 0.369054, "very aggressive"),
]


@dataclass(frozen=True)
class AgmDemo:
    values: tuple[float, ...]
    arithmetic: float
    geometric: float
    harmonic: float
    steps: tuple[tuple[float, float], ...]  # printed (A, H) after each step
    target: float
    printed_digits: int = 6


#: seed 002, "AGM Iteration Demonstration" on (1, 2, 4, 8).
SEED_002_AGM = AgmDemo(
    values=(1.0, 2.0, 4.0, 8.0),
    arithmetic=3.750000,
    geometric=2.828427,
    harmonic=2.133333,
    steps=((2.941667, 2.719547), (2.830607, 2.826249), (2.828428, 2.828426), (2.828427, 2.828427)),
    target=2.828427,
)


def table_violations(table: list[tuple[float, float, str]] = SEED_002_TABLE) -> list[str]:
    """Every adjacent pair (in increasing p) where the printed mean decreases, plus H <= G <= A."""
    rows = sorted(table)
    out = [
        f"M_{p0:g} = {m0:g} > M_{p1:g} = {m1:g}"
        for (p0, m0, _), (p1, m1, _) in zip(rows, rows[1:])
        if m0 > m1
    ]
    by_p = {p: m for p, m, _ in rows}
    if -1.0 in by_p and 0.0 in by_p and by_p[-1.0] > by_p[0.0]:
        out.append(f"harmonic {by_p[-1.0]:g} > geometric {by_p[0.0]:g} (H <= G violated)")
    if 0.0 in by_p and 1.0 in by_p and by_p[0.0] > by_p[1.0]:
        out.append(f"geometric {by_p[0.0]:g} > arithmetic {by_p[1.0]:g} (G <= A violated)")
    return out
