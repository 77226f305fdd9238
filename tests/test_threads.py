"""The pipeline threads: a generator read ahead, a map by several threads in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from airflow_provider_activities._threads import ordered_map, read_ahead


def _numbers(count: int, closed: threading.Event) -> Iterator[int]:
    """0 to ``count - 1``; ``closed`` is set when the generator is closed or ends."""
    try:
        yield from range(count)
    finally:
        closed.set()


def _ours() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("test-map")}


class TestOrderedMap:
    def test_results_come_in_the_items_order_whatever_finishes_first(self) -> None:
        def slow_for_small(n: int) -> int:
            time.sleep(0.02 if n % 3 == 0 else 0.0)
            return n * n

        assert list(ordered_map(slow_for_small, iter(range(20)), workers=3, name="test-map")) == [n * n for n in range(20)]
        assert not _ours()

    def test_items_are_worked_on_at_once(self) -> None:
        """Two workers: both items of a pair are in the function together (else the barrier breaks)."""
        barrier = threading.Barrier(2, timeout=5)

        def meet(n: int) -> int:
            barrier.wait()
            return n

        assert list(ordered_map(meet, iter(range(6)), workers=2, name="test-map")) == list(range(6))

    def test_one_worker_works_ahead_of_the_consumer(self) -> None:
        """The next item is converted while the consumer handles the one before."""
        started = threading.Event()

        def mark(n: int) -> int:
            if n == 1:
                started.set()
            return n

        results = ordered_map(mark, iter(range(3)), workers=1, name="test-map")
        assert next(results) == 0
        assert started.wait(5)  # item 1 began before the consumer asked for it
        assert list(results) == [1, 2]

    def test_an_error_is_raised_at_its_item_and_the_input_is_closed(self) -> None:
        closed = threading.Event()

        def fail_at_four(n: int) -> int:
            if n == 4:
                raise ValueError("four")
            return n

        seen = []
        with pytest.raises(ValueError, match="four"):
            for value in ordered_map(fail_at_four, _numbers(100, closed), workers=2, name="test-map"):
                seen.append(value)
        assert seen == [0, 1, 2, 3] and closed.is_set() and not _ours()

    def test_leaving_early_closes_the_input_and_the_threads(self) -> None:
        closed = threading.Event()
        results = ordered_map(lambda n: n, _numbers(1000, closed), workers=2, name="test-map")
        assert next(results) == 0
        results.close()
        assert closed.is_set() and not _ours()


def test_read_ahead_raises_the_producers_error_after_its_items() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise RuntimeError("producer")

    seen = []
    with pytest.raises(RuntimeError, match="producer"):
        for value in read_ahead(items(), depth=1, name="test-read-ahead"):
            seen.append(value)
    assert seen == [1, 2]
