"""Which of a contender's repeated runs is reported, shared by the extract regimes
(:mod:`benchmarks.run`) and the export regime (:mod:`benchmarks.export_bench`).
"""

from __future__ import annotations

from typing import Protocol, TypeVar


class Run(Protocol):
    """What a contender run must tell: whether it succeeded, and its wall time."""

    @property
    def ok(self) -> bool: ...

    @property
    def wall_s(self) -> float: ...


R = TypeVar("R", bound=Run)


def median_run(runs: list[R]) -> R:
    """The run of median wall time among the successful ones (all its numbers come from that one
    run), or among all of them when none succeeded.
    """
    ordered = sorted(runs, key=lambda r: (not r.ok, r.wall_s))
    good = [r for r in ordered if r.ok] or ordered
    return good[(len(good) - 1) // 2]
