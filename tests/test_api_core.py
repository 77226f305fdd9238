"""The transport-neutral core: config validation, timestamps, bounds, pagination plan, policies."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_activities.api.config import ClientConfig, is_loopback
from airflow_provider_activities.api.errors import InvalidResponseError
from airflow_provider_activities.api.pagination import PagePlan
from airflow_provider_activities.api.policy import RateLimiter, RetryPolicy, TokenCache, shared_rate_limiter
from airflow_provider_activities.api.protocol import day_filters, parse_error, parse_page
from airflow_provider_activities.api.queries import activity_key
from airflow_provider_activities.api.validation import check_interval, to_epoch_ms
from airflow_provider_activities.records.dedup import SeenKeys
from airflow_provider_activities.records.filters import RecordFilter, participant_key

UTC = timezone.utc


def config(host: str | None, **extra: object) -> ClientConfig:
    return ClientConfig.from_connection("peopleai_test", host, "key", "secret-value", dict(extra))


class TestConfig:
    def test_defaults(self) -> None:
        cfg = config(None)
        assert cfg.base_url == "https://api.people.ai"
        # page_size: None, the client learns the largest page the server takes (issue 14; was 1000)
        assert (cfg.page_size, cfg.requests_per_second, cfg.max_concurrency) == (None, 5.0, 10)
        assert "secret-value" not in repr(cfg)

    @pytest.mark.parametrize(
        "host, expected",
        [
            ("api.people.ai", "https://api.people.ai"),
            ("https://api.people.ai/", "https://api.people.ai"),
            ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
            ("http://localhost:1", "http://localhost:1"),
            ("http://[::1]:9", "http://[::1]:9"),
        ],
    )
    def test_base_url(self, host: str, expected: str) -> None:
        assert config(host).base_url == expected

    @pytest.mark.parametrize("host", ["http://api.people.ai", "http://10.0.0.5:80", "http://example.com"])
    def test_plain_http_refused_off_loopback(self, host: str) -> None:
        with pytest.raises(ValueError, match="plain http is refused") as err:
            config(host)
        assert "secret-value" not in str(err.value)

    def test_bad_extras_name_the_extra(self) -> None:
        with pytest.raises(ValueError, match="'page_size' must be 1 to 100000"):
            config(None, page_size=0)
        with pytest.raises(ValueError, match="'max_retries' must be a integer"):
            config(None, max_retries="many")
        with pytest.raises(ValueError, match="'verify_ssl' must be a boolean"):
            config(None, verify_ssl="perhaps")

    def test_missing_credentials(self) -> None:
        with pytest.raises(ValueError, match="no API key"):
            ClientConfig.from_connection("c", None, None, "s", {})
        with pytest.raises(ValueError, match="no API secret"):
            ClientConfig.from_connection("c", None, "k", "", {})

    def test_loopback(self) -> None:
        assert is_loopback("127.0.0.1") and is_loopback("127.8.0.1") and is_loopback("::1")
        assert not is_loopback("192.168.1.1") and not is_loopback("api.people.ai")


class TestTimestamps:
    @pytest.mark.parametrize(
        "value",
        [
            1793491200123,
            "1793491200123",
            1793491200.123,
            "2026-11-01T00:00:00.123Z",
            "2026-11-01T01:00:00.123+01:00",
            "2026-11-01T00:00:00.123000+00:00",
            "2026-11-01T00:00:00.1234567Z",
            datetime(2026, 11, 1, 0, 0, 0, 123000, tzinfo=UTC),
        ],
    )
    def test_forms(self, value: object) -> None:
        assert to_epoch_ms(value) == 1793491200123

    def test_no_zone_is_utc_and_none_passes(self) -> None:
        assert to_epoch_ms("2026-11-01T00:00:00") == 1793491200000
        assert to_epoch_ms(None) is None

    @pytest.mark.parametrize("value", ["yesterday", True, [1]])
    def test_rejects(self, value: object) -> None:
        with pytest.raises(ValueError):
            to_epoch_ms(value)


class TestRecordFilter:
    def test_bounds_dedups_and_counts(self) -> None:
        f = RecordFilter("timestamp", 1000_000_000_000, 1000_000_100_000, activity_key, ("timestamp",))
        page = [
            {"uid": "a", "timestamp": 1000_000_000_000},
            {"uid": "b", "timestamp": "2001-09-09T01:46:40.050Z"},
            {"uid": "a", "timestamp": 1000_000_000_000},
            {"uid": "c", "timestamp": 1000_000_100_000},
            {"uid": "d", "timestamp": None},
        ]
        kept = f.apply(page)
        assert [r["uid"] for r in kept] == ["a", "b"]
        assert kept[1]["timestamp"] == 1000_000_000_050
        assert (f.stats.seen, f.stats.kept, f.stats.duplicates, f.stats.outside) == (5, 2, 1, 2)

    def test_duplicates_dropped_exactly_across_frozen_blocks(self) -> None:
        """Blocks of 3 identities: repeats far apart are dropped, and identities whose hashes collide
        (``hash(-1) == hash(-2)``, ``hash(0) == hash(2**61 - 1)`` in CPython) are both kept.
        """
        f = RecordFilter("t", 0, None, lambda record: record["n"], ("t",), _seen=SeenKeys(block_size=3))
        assert hash(-1) == hash(-2) and hash(0) == hash(2**61 - 1)
        pages = [[-1, 0, 5, 6], [7, 8, 9, 5], [-2, 2**61 - 1, -1, 0, 10, 10], [11, 6, -2]]
        kept = [[r["n"] for r in f.apply([{"n": n, "t": 1} for n in page])] for page in pages]
        assert kept == [[-1, 0, 5, 6], [7, 8, 9], [-2, 2**61 - 1, 10], [11]]
        assert (f.stats.seen, f.stats.kept, f.stats.duplicates) == (17, 11, 6)
        assert len(f._seen._blocks) >= 2 and len(f._seen) == 11  # identities read back from spilled blocks

    def test_repeats_within_a_page_of_new_records_keep_the_first(self) -> None:
        f = RecordFilter("t", 0, None, lambda record: record["n"], ("t",))
        assert [r["n"] for r in f.apply([{"n": n, "t": 1} for n in (1, 2, 1, 3, 2)])] == [1, 2, 3]
        assert [r["n"] for r in f.apply([{"n": n, "t": 1} for n in (4, 3, 4, 5)])] == [4, 5]
        assert (f.stats.seen, f.stats.kept, f.stats.duplicates) == (9, 5, 4)

    def test_participant_identity_falls_back_to_email(self) -> None:
        assert participant_key({"activity_uid": "u", "id": 7, "email": "x"}) == ("u", 7)
        assert participant_key({"activity_uid": "u", "id": None, "email": "x"}) == ("u", None, "x")


class TestPagePlan:
    def test_sequential_without_total(self) -> None:
        plan = PagePlan(limit=100)
        assert plan.next_offsets([], 10) == [0]
        plan.receive(0, 100, None)
        assert plan.next_offsets([], 10) == [100]
        plan.receive(100, 40, None)  # a short page is not the end
        assert not plan.done and plan.next_offsets([], 10) == [140]
        plan.receive(140, 0, None)
        assert plan.done and plan.next_offsets([], 10) == []

    def test_read_ahead_steps_by_served_size(self) -> None:
        plan = PagePlan(limit=1000)
        plan.receive(0, 250, 1000)  # server caps pages at 250
        assert plan.next_offsets([], 10) == [250, 500, 750]
        plan.receive(250, 100, 1000)  # a shorter page leaves a gap at 350
        assert plan.next_offsets([500, 750], 10) == [350]
        plan.receive(350, 150, 1000)
        plan.receive(500, 250, 1000)
        plan.receive(750, 250, 1000)
        assert plan.done

    def test_ends_at_total(self) -> None:
        plan = PagePlan(limit=10)
        plan.receive(0, 10, 10)
        assert plan.done


class TestPolicies:
    def test_token_cache_refreshes_before_expiry(self) -> None:
        cache = TokenCache()
        cache.store("t1", expires_in=7200, now=0)
        assert cache.get(7000) == "t1" and cache.get(7141) is None  # margin 60 s
        cache.store("t2", expires_in=2, now=0)
        assert cache.get(1.7) == "t2" and cache.get(1.81) is None  # margin 10% of a short life
        cache.invalidate("other")
        assert cache.get(1.0) == "t2"
        cache.invalidate("t2")
        assert cache.get(1.0) is None

    def test_backoff_doubles_with_jitter_and_honours_retry_after(self) -> None:
        policy = RetryPolicy(max_retries=5, base=1.0, cap=4.0)
        for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 4.0)]:
            assert ceiling / 2 <= policy.delay(retry) <= ceiling
        assert policy.delay(1, {"Retry-After": "7"}) == 7.0
        assert policy.retryable_status(429) and policy.retryable_status(503) and not policy.retryable_status(404)

    def test_rate_limiter_never_exceeds_rate_in_any_window(self) -> None:
        """Requests taking 0 to 0.3 s, each arriving anywhere between send and answer."""
        import random

        rng = random.Random(3)
        limiter = RateLimiter(rate=5, margin=0.0)
        now, arrivals, in_flight = 0.0, [], []
        for _ in range(60):
            wait = limiter.acquire(now)
            while wait is None:  # every slot busy: the earliest answer comes back
                in_flight.sort()
                now = max(now, in_flight.pop(0))
                limiter.release(now)
                wait = limiter.acquire(now)
            send = now + wait
            answer = send + rng.uniform(0.0, 0.3)
            arrivals.append(rng.uniform(send, answer))
            in_flight.append(answer)
        arrivals.sort()
        for i, moment in enumerate(arrivals):
            assert sum(1 for other in arrivals[i:] if other <= moment + 1.0) <= 5

    def test_rate_limiter_caps_in_flight(self) -> None:
        limiter = RateLimiter(rate=2)
        assert limiter.acquire(0.0) == 0.0 and limiter.acquire(0.0) == 0.0
        assert limiter.acquire(0.0) is None
        limiter.release(0.5)
        assert limiter.acquire(0.6) == pytest.approx(0.91)

    def test_rate_limiter_set_rate_adds_and_drops_slots(self) -> None:
        limiter = RateLimiter(rate=3, margin=0.0)
        assert [limiter.acquire(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
        limiter.set_rate(1)  # three busy slots, one allowed: two are dropped as they come back
        for _ in range(3):
            limiter.release(1.0)
        assert limiter.acquire(1.0) == pytest.approx(1.0) and limiter.acquire(1.0) is None
        limiter.set_rate(2)
        assert limiter.acquire(1.0) == 0.0 and limiter.acquire(1.0) is None

    def test_forget_endpoint_drops_tokens_and_limiters_of_that_api_only(self) -> None:
        from airflow_provider_activities.api.policy import forget_endpoint, shared_token_cache

        tokens = shared_token_cache("http://127.0.0.1:7/auth/v1/tokens", "key", "secret")
        other = shared_token_cache("http://127.0.0.1:70/auth/v1/tokens", "key", "secret")
        limiter = shared_rate_limiter("http://127.0.0.1:7", "key", 5.0)
        assert shared_token_cache("http://127.0.0.1:7/auth/v1/tokens", "key", "secret") is tokens
        assert shared_token_cache("http://127.0.0.1:7/auth/v1/tokens", "key", "rotated") is not tokens
        forget_endpoint("http://127.0.0.1:7/")
        assert shared_token_cache("http://127.0.0.1:7/auth/v1/tokens", "key", "secret") is not tokens
        assert shared_rate_limiter("http://127.0.0.1:7", "key", 5.0) is not limiter
        assert shared_token_cache("http://127.0.0.1:70/auth/v1/tokens", "key", "secret") is other

    def test_shared_rate_limiter_one_per_api_key(self) -> None:
        first = shared_rate_limiter("http://127.0.0.1:1/", "key-a", 5.0)
        assert shared_rate_limiter("http://127.0.0.1:1", "key-a", 5.0) is first
        assert shared_rate_limiter("http://127.0.0.1:1", "key-b", 5.0) is not first
        assert shared_rate_limiter("http://127.0.0.1:2", "key-a", 5.0) is not first
        assert shared_rate_limiter("http://127.0.0.1:1", "key-a", 2.0) is first and first.rate == 2.0


class TestProtocol:
    def test_envelope_and_bare_list(self) -> None:
        page = parse_page(b'{"data": [{"uid": "a"}], "meta": {"limit": 1, "offset": 0, "total": 9, "message": null}}')
        assert page.records == [{"uid": "a"}] and page.total == 9
        assert parse_page(b'[{"uid": "b"}]').total is None

    @pytest.mark.parametrize("body", [b'{"data": [{"uid": "a"}', b"<html>", b'{"meta": {}}', b"[1, 2]"])
    def test_invalid_pages(self, body: bytes) -> None:
        with pytest.raises(InvalidResponseError):
            parse_page(body)

    def test_error_envelope(self) -> None:
        assert parse_error(b'{"code": 401, "id": "tr-1", "message": "Invalid or expired token"}') == (
            "Invalid or expired token",
            "tr-1",
        )

    def test_day_filters_cover_the_interval(self) -> None:
        start = datetime(2026, 11, 1, tzinfo=UTC)
        assert day_filters(start, start + timedelta(days=3)) == {"from": "2026-11-01", "to": "2026-11-03"}
        assert day_filters(start, start + timedelta(hours=1), "ingested-") == {
            "ingested-from": "2026-11-01",
            "ingested-to": "2026-11-01",
        }


class TestValidation:
    def test_interval_errors_name_the_parameter(self) -> None:
        start = datetime(2026, 11, 1, tzinfo=UTC)
        with pytest.raises(ValueError, match="start=2026-11-01T00:00:00 is a naive datetime"):
            check_interval(start.replace(tzinfo=None), start)
        with pytest.raises(ValueError, match="end .* must be after start"):
            check_interval(start, start)
        with pytest.raises(ValueError, match="over the API's 731-day limit"):
            check_interval(start, start + timedelta(days=800))
