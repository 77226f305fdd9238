"""The async client (PeopleAIAsyncHook) against the sandbox over real HTTP: the same answers as the
sync hook, under faults, with no secret in logs or errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest

from airflow_provider_activities.api.errors import PeopleAIAPIError, PeopleAIAuthError
from airflow_provider_activities.api.protocol import ACTIVITIES_PATH, page_request, parse_page
from airflow_provider_activities.hooks.peopleai import IngestCount, PeopleAIHook
from airflow_provider_activities.hooks.peopleai_async import PeopleAIAsyncHook
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.test_hook import _ForwardProxy, env_proxy  # noqa: F401 - env_proxy is a fixture

T = TypeVar("T")
UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
SECRET = "async-client-test-secret-4f2a"
FAST = {"page_size": 200, "requests_per_second": 10_000, "backoff_base": 0.01, "backoff_max": 0.05}


def connect(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, **extra: Any) -> None:
    """Point ``peopleai_default`` at ``sandbox`` with fast retries (and ``extra`` on top)."""
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(**{**FAST, **extra}))


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """1200 activities over 4 days, no rate limit, the connection pointing at it."""
    with Sandbox(seed=7, activities=1200, start=START, days=4, rate_limit=None, client_secret=SECRET) as sb:
        connect(monkeypatch, sb)
        yield sb
        assert sb.errors == []


def run(coroutine_function: Callable[[PeopleAIAsyncHook], Coroutine[Any, Any, T]]) -> T:
    """Run ``coroutine_function(hook)`` with a fresh async hook in a new event loop; the hook is closed."""

    async def main() -> T:
        async with PeopleAIAsyncHook() as hook:
            return await coroutine_function(hook)

    return asyncio.run(main())


def sync_count(since: datetime, until: datetime | None = None, activity_type: str | None = None) -> IngestCount:
    hook = PeopleAIHook()
    try:
        return hook.count_ingested(since, until, activity_type)
    finally:
        hook.close()


def async_count(since: datetime, until: datetime | None = None, activity_type: str | None = None) -> IngestCount:
    return run(lambda hook: hook.count_ingested(since, until, activity_type))


def truth(sandbox: Sandbox, since: datetime, until: datetime | None = None, activity_type: str | None = None) -> IngestCount:
    """The sandbox's ground truth: activities whose ``created_at`` is in ``[since, until)``."""
    end = until or sandbox.data_end + timedelta(days=365)
    found = sandbox.expected_activities(since, end, activity_type, by="created_at")
    latest = max((record["created_at"] for record in found), default=None)
    return IngestCount(len(found), datetime.fromtimestamp(latest / 1000, UTC) if latest is not None else None)


class TestSameAnswerAsTheSyncHook:
    @pytest.mark.parametrize(
        "since, until, activity_type",
        [
            (START, None, None),
            (START + timedelta(days=2, hours=7, minutes=13), None, None),
            (START + timedelta(days=1), START + timedelta(days=2), "meeting"),
            (START + timedelta(days=3), None, "email"),
            (START + timedelta(days=90), None, None),
        ],
    )
    def test_clean_data(self, sandbox: Sandbox, since: datetime, until: datetime | None, activity_type: str | None) -> None:
        expected = truth(sandbox, since, until, activity_type)
        assert sync_count(since, until, activity_type) == expected
        assert async_count(since, until, activity_type) == expected

    def test_under_429s_503s_dropped_bodies_and_expiring_tokens(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        # two in flight at most: a token living 3 uses is not used up by other requests
        # between a 401 and the retry with the new token (one re-authentication per request)
        connect(monkeypatch, sandbox, max_concurrency=2)
        since = START + timedelta(days=1)
        expected = truth(sandbox, since)

        def inject() -> None:
            sandbox.faults.fail_next(2, 429)
            sandbox.faults.fail_next(2, 503)
            sandbox.faults.drop_connection(1)
            sandbox.faults.invalid_json(1)
            sandbox.faults.token_endpoint_down(1)
            sandbox.faults.expire_tokens_after(3)

        inject()
        assert sync_count(since) == expected
        sync_stats = sandbox.stats
        sandbox.reset_log()
        inject()
        assert async_count(since) == expected
        async_stats = sandbox.stats
        for stats in (sync_stats, async_stats):
            assert stats["429"] == 2 and stats["503"] >= 3 and stats["401"] >= 1, stats
            assert stats["drop_connection"] == 1 and stats["invalid_json"] == 1, stats

    def test_revoked_token_between_two_counts(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=2)
        expected = truth(sandbox, since)

        async def twice(hook: PeopleAIAsyncHook) -> tuple[IngestCount, IngestCount]:
            first = await hook.count_ingested(since)
            assert sandbox.revoke_tokens() == 1
            return first, await hook.count_ingested(since)

        assert run(twice) == (expected, expected)
        assert sandbox.stats["401"] == 1 and sandbox.stats["tokens_issued"] == 2

    def test_records_inserted_while_paging(self, sandbox: Sandbox) -> None:
        """meta.total moves mid-read: both clients read again and find the inserted records."""
        since = START
        for count in (sync_count, async_count):
            sandbox.reset_log()
            sandbox.faults.insert_before_offset(400, 3)
            assert count(since) == truth(sandbox, since)
            assert sandbox.stats["inserted"] == 3
            first_pages = [r for r in sandbox.requests if r.query.get("offset") == "0"]
            assert len(first_pages) == 2  # a second pass

    def test_capped_pages_bare_lists_and_ignored_filters(self, sandbox: Sandbox) -> None:
        sandbox.faults.cap_page_size(70)
        sandbox.faults.bare_list()
        sandbox.faults.ignore_filters()
        sandbox.timestamp_format = "mixed"
        since = START + timedelta(days=2, hours=12)
        assert sync_count(since) == async_count(since) == truth(sandbox, since)


class TestClient:
    def test_generic_run_shares_token_rate_limit_and_retries(self, sandbox: Sandbox) -> None:
        sandbox.faults.fail_next(1, 502)

        async def pages(hook: PeopleAIAsyncHook) -> list[Any]:
            requests = [page_request(ACTIVITIES_PATH, {}, offset, 100) for offset in range(0, 1200, 100)]
            return await asyncio.gather(*(hook.run(request, parse_page) for request in requests))

        got = run(pages)
        assert [len(page.records) for page in got] == [100] * 12
        assert {record["uid"] for page in got for record in page.records} == {
            record["uid"] for record in sandbox.expected_activities(START, sandbox.data_end)
        }
        assert sandbox.stats["tokens_issued"] == 1 and sandbox.stats["502"] == 1

    def test_rate_limit_and_concurrency_respected(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Concurrent first calls share one limiter: a sandbox enforcing 5/s and 2 in flight never says 429."""
        kinds = ("email", "call", "meeting")

        async def three(hook: PeopleAIAsyncHook) -> list[IngestCount]:
            return list(await asyncio.gather(*(hook.count_ingested(START, activity_type=kind) for kind in kinds)))

        with Sandbox(seed=3, activities=600, start=START, days=2, rate_limit=5.0, max_concurrency=2) as sandbox:
            connect(monkeypatch, sandbox, page_size=100, requests_per_second=5, max_concurrency=2)
            answers = run(three)
            assert [a.count for a in answers] == [truth(sandbox, START, activity_type=k).count for k in kinds]
            stats = sandbox.stats
        assert stats.get("429", 0) == 0 and stats["tokens_issued"] == 1, stats

    def test_connection_refused_is_retried_then_reported(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        connect(monkeypatch, sandbox, max_retries=2)
        sandbox.stop()
        with pytest.raises(PeopleAIAPIError, match=r"POST /auth/v1/tokens failed after 3 attempts: no response: Client"):
            async_count(START)

    def test_read_timeout_is_retried_then_reported_like_the_sync_hook(
        self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        connect(monkeypatch, sandbox, timeout=0.2, max_retries=1)
        sandbox.faults.set_latency(1.0)
        for count in (sync_count, async_count):
            with pytest.raises(PeopleAIAPIError, match=r"POST /auth/v1/tokens failed after 2 attempts: no response: .*[Tt]imeout"):
                count(START)
        sandbox.faults.set_latency(0.1)  # slower than before, faster than the timeout
        assert async_count(START + timedelta(days=3)) == truth(sandbox, START + timedelta(days=3))

    def test_non_retryable_status_fails_at_once(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        connect(monkeypatch, sandbox, page_size=100_000)
        sandbox.max_page_size = 500
        with pytest.raises(PeopleAIAPIError, match=r"GET /v0/public/activities \(offset 0\) failed: HTTP 400"):
            async_count(START)
        assert sandbox.stats["400"] == 1

    def test_bad_input_raises_before_any_request(self, sandbox: Sandbox) -> None:
        with pytest.raises(ValueError, match="since=.* naive datetime"):
            async_count(datetime(2026, 11, 1))
        with pytest.raises(ValueError, match="activity_type='fax'"):
            async_count(START, activity_type="fax")
        assert sandbox.requests == []

    def test_session_closed_after_use_and_after_errors(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        async def main(fail: bool) -> PeopleAIAsyncHook:
            hook = PeopleAIAsyncHook()
            with pytest.raises(PeopleAIAuthError) if fail else _nothing():
                async with hook:
                    await hook.count_ingested(START + timedelta(days=3))
                    assert hook._session is not None and not hook._session.closed
            assert hook._session is None
            return hook

        asyncio.run(main(fail=False))
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json().replace(SECRET, "wrong"))
        asyncio.run(main(fail=True))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: Any) -> None:
        return None


class TestNoSecrets:
    def test_not_in_logs_nor_errors(
        self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        errors: list[str] = []
        with caplog.at_level(logging.DEBUG):
            sandbox.faults.fail_next(2, 429)
            sandbox.faults.drop_connection(1)
            sandbox.faults.expire_tokens_after(1)
            sandbox.faults.token_endpoint_down(1)
            async_count(START + timedelta(days=1))
            sandbox.faults.reset()
            # a final 4xx on an authenticated call (the bearer token was sent)
            connect(monkeypatch, sandbox, page_size=100_000)
            sandbox.max_page_size = 10
            with pytest.raises(PeopleAIAPIError) as api_error:
                async_count(START)
            errors.append(str(api_error.value) + repr(api_error.value))
            # rejected credentials
            monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json().replace(SECRET, SECRET + "-old"))
            with pytest.raises(PeopleAIAuthError) as auth_error:
                async_count(START)
            errors.append(str(auth_error.value) + repr(auth_error.value))
        tokens = list(sandbox.token_uses())
        assert len(tokens) >= 3
        assert "rejected the credentials of connection 'peopleai_default'" in errors[1]
        for text in [caplog.text, *errors]:
            for secret in [SECRET, *tokens]:
                assert secret not in text
        assert "retry 1 of" in caplog.text  # the retries were logged, without secrets

    def test_repr_holds_no_secret(self, sandbox: Sandbox) -> None:
        async def config(hook: PeopleAIAsyncHook) -> str:
            return repr(hook) + repr(await hook.get_config())

        text = run(config)
        assert SECRET not in text and "peopleai_default" in text


def test_hooks_of_one_process_on_the_same_credentials_share_one_token(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """A triggerer runs many triggers, each with its own async hook: they reuse one token (and
    register one value with the secrets masker) instead of minting one each.
    """
    since = START + timedelta(days=1)
    sync_count(since)
    sync_count(since)
    for _ in range(3):
        async_count(since)
    assert len([r for r in sandbox.requests if r.path == "/auth/v1/tokens"]) == 1

    # Other credentials never ride on that token: a connection with a wrong secret asks for its
    # own token, and is refused.
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(**FAST).replace(SECRET, "not-the-secret"))
    with pytest.raises(PeopleAIAuthError):
        sync_count(since)
    with pytest.raises(PeopleAIAuthError):
        async_count(since)
    assert len([r for r in sandbox.requests if r.path == "/auth/v1/tokens"]) == 3


class TestEnvironment:
    def test_env_proxy_is_used_like_the_sync_hook(
        self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, env_proxy: _ForwardProxy
    ) -> None:
        end = START + timedelta(days=2)
        assert async_count(START, end) == truth(sandbox, START, end)
        assert env_proxy.forwarded and len(env_proxy.forwarded) == len(sandbox.requests)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        forwarded = len(env_proxy.forwarded)
        assert async_count(START, end) == truth(sandbox, START, end)
        assert len(env_proxy.forwarded) == forwarded
