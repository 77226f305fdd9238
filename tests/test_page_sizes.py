"""Pages as large as the server takes (issue 14): the client learns a server's cap and its
largest accepted ``limit`` from its answers, keeps what it learnt per process, base URL and
endpoint, and sizes pages to stay within its memory budget. Against the sandbox, over HTTP.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_activities.api.pagination import (
    FIRST_PAGE_SIZE,
    MIN_PAGE_SIZE,
    PAGE_BYTES_BUDGET,
    PageSizes,
)
from airflow_provider_activities.api.protocol import Page
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.hooks.peopleai_async import PeopleAIAsyncHook
from airflow_provider_activities.testing.sandbox import Sandbox

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def connect(monkeypatch: pytest.MonkeyPatch, sb: Sandbox, **extra: Any) -> PeopleAIHook:
    """A hook on ``peopleai_default`` with the connection's defaults for page sizes."""
    settings: dict[str, Any] = {"requests_per_second": 10_000, "backoff_base": 0.001, "backoff_max": 0.01}
    settings.update(extra)
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sb.connection_json(**settings))
    return PeopleAIHook()


def data_requests(sb: Sandbox) -> list[Any]:
    return [r for r in sb.requests if "/auth/" not in r.path]


def uids(records: list[dict[str, Any]]) -> list[str]:
    return sorted(record["uid"] for record in records)


@pytest.mark.parametrize("daily", [True, False], ids=["three-daily-reads", "one-3-day-read"])
def test_a_3_day_extract_from_a_server_capping_pages_at_20000_takes_3_requests(
    monkeypatch: pytest.MonkeyPatch, daily: bool
) -> None:
    """Done when: a 3-day extract from a server that takes pages of at most 20,000 needs at most
    3 data requests with default extras, and is exact.
    """
    with Sandbox(seed=14, activities=36_000, start=START, days=3, rate_limit=None) as sb:
        sb.faults.cap_page_size(20_000)
        hook = connect(monkeypatch, sb)
        windows = [(START + day * DAY, START + (day + 1) * DAY) for day in range(3)] if daily else [(START, START + 3 * DAY)]
        for start, end in windows:
            expected = sb.expected_activities(start, end)
            assert len(expected) <= 20_000 * (1 if daily else 3)  # the premise: 3 pages of the cap suffice
            assert uids(list(hook.iter_activities(start, end))) == uids(expected)
        requests = data_requests(sb)
        assert len(requests) <= 3, [(r.path, r.query) for r in requests]


@pytest.mark.parametrize("cap", [20_000, 7_000])
def test_a_capped_server_takes_ceil_records_over_its_cap_requests(monkeypatch: pytest.MonkeyPatch, cap: int) -> None:
    with Sandbox(seed=15, activities=60_000, start=START, days=1, rate_limit=None) as sb:
        sb.faults.cap_page_size(cap)
        got = list(connect(monkeypatch, sb).iter_activities(START, START + DAY))
        assert uids(got) == uids(sb.expected_activities(START, START + DAY))
        records = len(got)
        assert len(data_requests(sb)) <= math.ceil(records / cap) + 2


@pytest.mark.parametrize("largest", [20_000, 3_000])
def test_a_server_refusing_large_limits_with_400_is_probed_then_read_exactly(
    monkeypatch: pytest.MonkeyPatch, largest: int
) -> None:
    with Sandbox(seed=16, activities=50_000, start=START, days=1, rate_limit=None, max_page_size=largest) as sb:
        got = list(connect(monkeypatch, sb).iter_activities(START, START + DAY))
        assert uids(got) == uids(sb.expected_activities(START, START + DAY))
        requests = data_requests(sb)
        refused = [r for r in requests if r.status == 400]
        assert 1 <= len(refused) <= 2
        assert len(requests) <= math.ceil(len(got) / largest) + 2
        assert all(int(r.query["limit"]) <= largest for r in requests if r.status == 200)
        # what the process learnt: the next read starts at a size that works
        sb.reset_log()
        again = list(connect(monkeypatch, sb).iter_activities(START, START + DAY))
        assert uids(again) == uids(got)
        assert not [r for r in data_requests(sb) if r.status == 400]


def test_an_explicit_page_size_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    with Sandbox(seed=17, activities=3_000, start=START, days=1, rate_limit=None) as sb:
        got = list(connect(monkeypatch, sb, page_size=500).iter_activities(START, START + DAY))
        assert uids(got) == uids(sb.expected_activities(START, START + DAY))
        assert {r.query["limit"] for r in data_requests(sb)} == {"500"}


def test_an_explicit_page_size_the_server_refuses_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with Sandbox(seed=18, activities=3_000, start=START, days=1, rate_limit=None, max_page_size=1_000) as sb:
        hook = connect(monkeypatch, sb, page_size=5_000)
        with pytest.raises(Exception, match="400"):
            list(hook.iter_activities(START, START + DAY))
        assert len(data_requests(sb)) == 1


def test_the_async_hook_learns_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """The triggers' counts use the same rule: one probe, then pages of the largest size."""
    with Sandbox(seed=19, activities=30_000, start=START, days=1, rate_limit=None, max_page_size=8_000) as sb:
        connect(monkeypatch, sb)

        async def count() -> int:
            async with PeopleAIAsyncHook() as hook:
                return (await hook.count_ingested(START - DAY)).count

        counted = asyncio.run(count())
        assert counted == len(sb.expected_activities(START, START + DAY))
        requests = data_requests(sb)
        assert len([r for r in requests if r.status == 400]) == 1
        assert len(requests) <= math.ceil(counted / 8_000) + 1


class TestPageSizes:
    """The rule itself, without a server."""

    @staticmethod
    def page(count: int, total: int | None, limit: int | None = None, body_bytes: int = 0) -> Page:
        return Page(records=[{}] * count, total=total, limit=limit, body_bytes=body_bytes)

    def test_starts_large_and_sizes_pages_to_the_byte_budget(self) -> None:
        sizes = PageSizes()
        assert sizes.limit() == FIRST_PAGE_SIZE
        sizes.served(FIRST_PAGE_SIZE, self.page(FIRST_PAGE_SIZE, 10**6, body_bytes=FIRST_PAGE_SIZE * 2_000), 0)
        assert sizes.limit() == PAGE_BYTES_BUDGET // 2_000 // 1000 * 1000  # 2 KB records: smaller pages, whole thousands
        assert sizes.in_flight(10) < 10  # and fewer of them in flight

    def test_small_records_grow_pages_up_to_the_api_maximum(self) -> None:
        sizes = PageSizes()
        sizes.served(FIRST_PAGE_SIZE, self.page(FIRST_PAGE_SIZE, 10**6, body_bytes=FIRST_PAGE_SIZE * 100), 0)
        assert sizes.limit() == 100_000

    def test_a_size_barely_above_one_known_to_work_is_not_probed(self) -> None:
        """Growing by less than a quarter would risk a refused page per page in flight for little."""
        sizes = PageSizes()
        record_bytes = PAGE_BYTES_BUDGET // (FIRST_PAGE_SIZE * 21 // 20)  # the budget: 5% more records
        sizes.served(FIRST_PAGE_SIZE, self.page(FIRST_PAGE_SIZE, 10**6, body_bytes=FIRST_PAGE_SIZE * record_bytes), 0)
        assert sizes.limit() == FIRST_PAGE_SIZE
        sizes = PageSizes()
        record_bytes = PAGE_BYTES_BUDGET // (FIRST_PAGE_SIZE * 2)  # twice as many: worth it
        sizes.served(FIRST_PAGE_SIZE, self.page(FIRST_PAGE_SIZE, 10**6, body_bytes=FIRST_PAGE_SIZE * record_bytes), 0)
        assert sizes.limit() == 2 * FIRST_PAGE_SIZE

    def test_a_meta_limit_below_the_limit_asked_is_a_cap(self) -> None:
        sizes = PageSizes()
        sizes.served(FIRST_PAGE_SIZE, self.page(500, 500, limit=500, body_bytes=500 * 100), 0)
        assert sizes.cap == 500 and sizes.limit() == 500

    def test_the_last_short_page_is_not_a_cap(self) -> None:
        sizes = PageSizes()
        sizes.served(FIRST_PAGE_SIZE, self.page(700, 700, body_bytes=700 * 100), 0)
        assert sizes.cap is None

    def test_a_400_names_the_size_to_try_or_halves_down_to_the_floor(self) -> None:
        sizes = PageSizes()
        assert sizes.refused_limit(25_000, "limit must be between 1 and 20000, got 25000") == 20_000
        assert sizes.limit() == 20_000
        assert sizes.refused_limit(20_000, "bad request") == 10_000
        sizes.served(10_000, self.page(10_000, 10**6, body_bytes=10_000 * 100), 0)
        assert sizes.limit() == 10_000  # never back above a size known to work after a refusal
        assert sizes.refused_limit(10_000, "bad request") is None  # known to work: not about the size
        assert PageSizes().refused_limit(MIN_PAGE_SIZE, "bad request") is None


def test_a_full_first_page_lets_read_ahead_step_by_the_grown_size() -> None:
    """A first page holding all it was asked for shows no cap: the next pages are planned at the
    grown size, not overlapping (each offset once).
    """
    from airflow_provider_activities.api.pagination import PagePlan

    plan = PagePlan(limit=25_000)
    plan.receive(0, 25_000, 300_000, next_limit=42_000)
    assert plan.next_offsets(set(), 3) == [25_000, 67_000, 109_000]
    capped = PagePlan(limit=25_000)
    capped.receive(0, 20_000, 300_000, next_limit=20_000)  # a short page while records remain: the cap
    assert capped.next_offsets(set(), 3) == [20_000, 40_000, 60_000]


def test_the_parquet_bytes_do_not_depend_on_the_page_sizes(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A day larger than a batch, written with small fixed pages, with the learnt sizes from a cold
    process, and again once they are learnt: the same Parquet bytes (a rerun in a warm worker
    rewrites what a cold one wrote, byte for byte).
    """
    import functools
    import hashlib
    from pathlib import Path

    import airflow_provider_activities.operators._run as operator_module
    import airflow_provider_activities.storage.writer as writer_module
    from airflow_provider_activities.hooks import _streams
    from airflow_provider_activities.operators.peopleai import PeopleAIActivitiesToParquetOperator
    from tests.airflow_compat import ExecutorSafeguard

    monkeypatch.setattr(ExecutorSafeguard, "test_mode", True)
    monkeypatch.setattr(_streams, "BATCH_ROWS", 4_000)  # several batches per day at this size
    # and a small writer, whose row groups follow the batches it is given
    monkeypatch.setattr(
        operator_module, "PartitionedParquetWriter", functools.partial(writer_module.PartitionedParquetWriter, row_group_size=3_000, max_buffered_rows=5_000)
    )

    def digests(output: Path) -> dict[str, str]:
        return {
            str(path.relative_to(output)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(output.rglob("*.parquet"))
        }

    with Sandbox(seed=20, activities=30_000, start=START, days=1, rate_limit=None) as sb:
        sb.faults.cap_page_size(7_000)
        outputs = []
        for name, extra in [("fixed", {"page_size": 900}), ("cold", {}), ("warm", {})]:
            connect(monkeypatch, sb, **extra)
            output = tmp_path / name
            op = PeopleAIActivitiesToParquetOperator(
                task_id="activities", output_path=output.as_uri(), start=START.isoformat(), end=(START + DAY).isoformat()
            )
            op.execute({"run_id": "pages"})
            outputs.append(digests(output / "activities"))
    assert outputs[0] and outputs[0] == outputs[1] == outputs[2]
