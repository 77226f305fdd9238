"""PeopleAIHook over real HTTP against the sandbox: auth, retries, rate limit, pagination, bounds."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_activities.api.errors import PeopleAIAPIError, PeopleAIAuthError
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.testing.sandbox import Sandbox

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
SECRET = "s3cr3t-client-secret-for-tests"
TOKEN_PATH = "/auth/v1/tokens"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=11, activities=1500, start=START, days=6, rate_limit=None, client_secret=SECRET) as sb:
        yield sb


def connect(monkeypatch: pytest.MonkeyPatch, sb: Sandbox, **extra: Any) -> PeopleAIHook:
    """A hook on ``peopleai_default`` pointing at ``sb``: small pages, fast backoff, no pacing."""
    settings: dict[str, Any] = {"page_size": 100, "requests_per_second": 10_000, "backoff_base": 0.001, "backoff_max": 0.01}
    settings.update(extra)
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sb.connection_json(**settings))
    return PeopleAIHook()


def data_requests(sb: Sandbox) -> list[Any]:
    return [r for r in sb.requests if r.path != TOKEN_PATH]


def token_requests(sb: Sandbox) -> list[Any]:
    return [r for r in sb.requests if r.path == TOKEN_PATH]


def uids(records: list[dict[str, Any]]) -> list[str]:
    return [r["uid"] for r in records]


def pages_for(sb: Sandbox, start: datetime, end: datetime, page_size: int, activity_type: str | None = None) -> int:
    """How many data requests a clean read takes: the filtered total in pages (the last page ends it)."""
    served = sb.activity_count(start, end, activity_type) if hasattr(sb, "activity_count") else None
    assert served is not None
    return max(1, -(-served // page_size))


class TestReads:
    def test_activities_exact_for_window(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox)
        end = START + timedelta(days=3)
        got = list(hook.iter_activities(START, end))
        expected = sandbox.expected_activities(START, end)
        assert uids(got) == uids(expected)
        assert all(START <= r["timestamp"] < end and r["timestamp"].tzinfo is not None for r in got)
        assert {r["activity_type"] for r in got} == {"email", "call", "meeting"}

    @pytest.mark.parametrize("activity_type", ["email", "call", "meeting"])
    def test_typed(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, activity_type: str) -> None:
        hook = connect(monkeypatch, sandbox)
        end = START + timedelta(days=2)
        got = list(hook.iter_activities(START, end, activity_type))
        assert uids(got) == uids(sandbox.expected_activities(START, end, activity_type))
        assert {r["activity_type"] for r in got} == {activity_type}
        assert {r.path for r in data_requests(sandbox)} == {f"/v0/public/activities/{activity_type}"}

    def test_participants_exact(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, page_size=500)
        end = START + timedelta(days=1)
        got = list(hook.iter_participants(START, end))
        expected = sandbox.expected_participants(START, end)
        key = lambda r: (r["activity_uid"], r["id"], r["email"])  # noqa: E731
        assert [key(r) for r in got] == [key(r) for r in expected]
        assert all(START <= r["activity_timestamp"] < end for r in got)

    def test_sub_day_interval_bounded_client_side(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox)
        start, end = START + timedelta(hours=9), START + timedelta(hours=13)
        got = list(hook.iter_activities(start, end))
        assert uids(got) == uids(sandbox.expected_activities(start, end))
        assert got, "the window should hold activities"

    @pytest.mark.parametrize("timestamp_format", ["iso", "mixed"])
    def test_iso_and_mixed_timestamps(self, monkeypatch: pytest.MonkeyPatch, timestamp_format: str) -> None:
        with Sandbox(seed=3, activities=400, start=START, days=2, rate_limit=None, timestamp_format=timestamp_format) as sb:
            hook = connect(monkeypatch, sb)
            got = list(hook.iter_activities(START, START + timedelta(days=1)))
            expected = sb.expected_activities(START, START + timedelta(days=1))
            assert uids(got) == uids(expected)
            for record, truth in zip(got, expected):
                assert int(record["timestamp"].timestamp() * 1000) == truth["timestamp"]
                assert int(record["created_at"].timestamp() * 1000) == truth["created_at"]

    def test_bare_list_and_capped_pages(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox)
        sandbox.faults.bare_list()
        sandbox.faults.cap_page_size(37)
        end = START + timedelta(days=2)
        got = list(hook.iter_activities(START, end))
        assert uids(got) == uids(sandbox.expected_activities(START, end))
        # short pages are not the end: only the final empty page ends a bare-list stream
        expected_pages = -(-len(got) // 37) + 1
        assert len(data_requests(sandbox)) == expected_pages

    def test_capped_pages_with_total_read_ahead(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, max_concurrency=4)
        sandbox.faults.cap_page_size(30)
        end = START + timedelta(days=2)
        got = list(hook.iter_activities(START, end))
        assert uids(got) == uids(sandbox.expected_activities(START, end))

    def test_overlapping_pages_deduplicated_and_counted(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, max_concurrency=1)
        sandbox.faults.overlap_pages()
        end = START + timedelta(days=2)
        stream = hook.stream_activities(START, end)
        got = [r for page in stream for r in page]
        assert [r["uid"] for r in got] == uids(sandbox.expected_activities(START, end))
        # each page starts one record early: page 2 repeats the last record of page 1; later
        # pages start where the previous (shifted) page ended, so only that one repeat occurs
        assert stream.stats.duplicates == 1 and stream.pages > 2

    def test_ignored_filters_bounded_client_side(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, page_size=500)
        sandbox.faults.ignore_filters()
        start, end = START + timedelta(days=2), START + timedelta(days=3)
        stream = hook.stream_activities(start, end)
        got = [r for page in stream for r in page]
        assert [r["uid"] for r in got] == uids(sandbox.expected_activities(start, end))
        assert stream.stats.outside == 1500 - len(got)

    def test_inserts_while_paging(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, max_concurrency=1)
        sandbox.faults.insert_before_offset(300, count=5)
        end = START + timedelta(days=3)
        stream = hook.stream_activities(START, end)
        got = [r["uid"] for page in stream for r in page]
        assert len(got) == len(set(got))
        # the 5 records inserted at the front shifted later pages (5 repeats) and were behind the
        # reader; meta.total moved, so a second pass picked them up
        assert set(got) == set(uids(sandbox.expected_activities(START, end)))
        first_pass = -(-(len(got) - 5) // 100)
        assert stream.stats.duplicates == 5 + (len(got) - 5)
        assert stream.pages > first_pass

    def test_count_ingested(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, page_size=500)
        since = START + timedelta(days=2)
        everything = sandbox.expected_activities(START, START + timedelta(days=30))
        truth = [r for r in everything if r["created_at"] >= since.timestamp() * 1000]
        answer = hook.count_ingested(since)
        assert answer.count == len(truth) > 0
        assert answer.latest_ingested_at == datetime.fromtimestamp(max(r["created_at"] for r in truth) / 1000, UTC)
        until = since + timedelta(days=1)
        bounded = [r for r in truth if r["created_at"] < until.timestamp() * 1000]
        assert hook.count_ingested(since, until).count == len(bounded)
        assert hook.count_ingested(START + timedelta(days=60)) .count == 0

    def test_test_connection(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        ok, message = connect(monkeypatch, sandbox).test_connection()
        assert ok and "token accepted" in message
        monkeypatch.setenv(
            "AIRFLOW_CONN_PEOPLEAI_DEFAULT",
            Sandbox.connection_json(sandbox).replace(SECRET, "wrong-secret-value"),
        )
        ok, message = PeopleAIHook().test_connection()
        assert not ok and "rejected the credentials of connection 'peopleai_default'" in message
        assert "wrong-secret-value" not in message


class TestAuth:
    def test_token_cached_across_calls(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox)
        list(hook.iter_activities(START, START + timedelta(days=1)))
        list(hook.iter_activities(START, START + timedelta(days=2)))
        assert len(token_requests(sandbox)) == 1
        form_requests = token_requests(sandbox)
        assert form_requests[0].method == "POST"

    def test_refreshed_before_expiry(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with Sandbox(seed=2, activities=300, start=START, days=1, rate_limit=None, token_ttl=1.0, latency=0.1) as sb:
            hook = connect(monkeypatch, sb, page_size=30, max_concurrency=1)  # 11 requests over ~1.1 s
            got = list(hook.iter_activities(START, START + timedelta(days=1)))
            assert len(got) == 300
            assert sb.stats.get("401", 0) == 0  # refreshed before expiry, never rejected
            assert len(token_requests(sb)) >= 2

    def test_401_mid_stream_reauthenticates_once(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, max_concurrency=1)
        sandbox.faults.expire_tokens_after(2)  # every token is rejected at its third use
        end = START + timedelta(days=3)
        got = list(hook.iter_activities(START, end))
        assert uids(got) == uids(sandbox.expected_activities(START, end))
        pages = -(-len(got) // 100)
        statuses = [r.status for r in data_requests(sandbox)]
        assert statuses.count(200) == pages
        # one 401 per token worn out, each answered by one new token and one retry
        assert statuses.count(401) == len(token_requests(sandbox)) - 1 == (pages - 1) // 2

    def test_revoked_token_mid_stream(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, max_concurrency=1)
        end = START + timedelta(days=2)
        stream = hook.stream_activities(START, end)
        pages = iter(stream)
        first = next(pages)
        sandbox.revoke_tokens()
        rest = [r for page in pages for r in page]
        assert [r["uid"] for r in first + rest] == uids(sandbox.expected_activities(START, end))
        assert len(token_requests(sandbox)) == 2

    def test_bad_credentials_clear_error_without_secret(
        self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        payload = sandbox.connection_json().replace(SECRET, "definitely-wrong-secret")
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", payload)
        with caplog.at_level(logging.DEBUG), pytest.raises(PeopleAIAuthError) as err:
            list(PeopleAIHook().iter_activities(START, START + timedelta(days=1)))
        assert "'peopleai_default'" in str(err.value)
        assert "definitely-wrong-secret" not in str(err.value) + caplog.text
        assert len(token_requests(sandbox)) == 1  # a 401 from the token endpoint is not retried

    def test_token_endpoint_down_then_up(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox)
        sandbox.faults.token_endpoint_down(2)
        assert len(list(hook.iter_activities(START, START + timedelta(days=1)))) > 0
        assert [r.status for r in token_requests(sandbox)] == [503, 503, 200]

    def test_token_endpoint_down_for_good(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, max_retries=2)
        sandbox.faults.token_endpoint_down(10)
        with pytest.raises(PeopleAIAPIError, match=r"POST /auth/v1/tokens failed after 3 attempts: HTTP 503"):
            list(hook.iter_activities(START, START + timedelta(days=1)))
        assert len(token_requests(sandbox)) == 3


class TestRetries:
    @pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
    def test_transient_status_retried_exact_count(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, status: int) -> None:
        hook = connect(monkeypatch, sandbox, page_size=1000)
        sandbox.faults.fail_next(2, status)
        got = list(hook.iter_activities(START, START + timedelta(days=1)))
        assert uids(got) == uids(sandbox.expected_activities(START, START + timedelta(days=1)))
        statuses = [r.status for r in data_requests(sandbox)]
        assert statuses == [status, status, 200]  # one page holds the day; total ends the stream

    def test_dropped_connection_and_invalid_json_retried(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, page_size=1000)
        sandbox.faults.drop_connection(1)
        sandbox.faults.invalid_json(1)
        got = list(hook.iter_activities(START, START + timedelta(days=1)))
        assert uids(got) == uids(sandbox.expected_activities(START, START + timedelta(days=1)))
        assert len(data_requests(sandbox)) == 3

    def test_retry_after_honoured(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, page_size=1000)
        sandbox.faults.fail_next(1, 429, retry_after=0.4)
        list(hook.iter_activities(START, START + timedelta(days=1)))
        first, second = data_requests(sandbox)[:2]
        assert second.time - first.time >= 0.38

    def test_retries_exhausted_error_names_everything(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, max_retries=1, page_size=100)
        list(hook.iter_activities(START, START + timedelta(hours=1)))  # token first
        sandbox.reset_log()
        sandbox.faults.fail_next(5, 503)
        with pytest.raises(PeopleAIAPIError) as err:
            list(hook.iter_activities(START, START + timedelta(days=1)))
        text = str(err.value)
        assert "GET /v0/public/activities (offset 0) failed after 2 attempts: HTTP 503" in text
        assert "[trace id " in text
        assert len(data_requests(sandbox)) == 2

    def test_client_error_not_retried(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        hook = connect(monkeypatch, sandbox, page_size=100_000)
        sandbox.max_page_size = 5000
        with pytest.raises(PeopleAIAPIError, match="HTTP 400"):
            list(hook.iter_activities(START, START + timedelta(days=1)))
        assert len(data_requests(sandbox)) == 1


class TestRateLimit:
    def test_paces_itself_under_the_sandbox_limit(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with Sandbox(seed=5, activities=600, start=START, days=1, rate_limit=5.0) as sb:
            hook = connect(monkeypatch, sb, page_size=40, requests_per_second=5, max_concurrency=10)
            got = list(hook.iter_activities(START, START + timedelta(days=1)))
            assert len(got) == 600
            times = [r.time for r in sb.requests]
            assert len(times) >= 16
            assert sb.stats.get("429", 0) == 0
            for i, moment in enumerate(times):
                assert sum(1 for t in times[i:] if t < moment + 1.0) <= 5


    def test_hooks_on_one_api_key_share_the_rate(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Two sync hooks in two threads and an async hook in an event loop, one API key, 5/s each
        configured: together they stay under the sandbox's 5/s (each alone used to send at 5/s).
        """
        import asyncio
        import threading

        from airflow_provider_activities.hooks.peopleai_async import PeopleAIAsyncHook

        with Sandbox(seed=5, activities=240, start=START, days=1, rate_limit=5.0) as sb:
            first = connect(monkeypatch, sb, page_size=40, requests_per_second=5, max_concurrency=10)
            second = PeopleAIHook()
            assert first._limiter is second._limiter
            got: dict[str, int] = {}

            def read(name: str, hook: PeopleAIHook) -> None:
                got[name] = len(list(hook.iter_activities(START, START + timedelta(days=1))))

            async def count() -> int:
                async with PeopleAIAsyncHook() as hook:
                    answer = await hook.count_ingested(START - timedelta(days=1))
                    assert hook._limiter is first._limiter
                    return answer.count

            threads = [
                threading.Thread(target=read, args=("first", first)),
                threading.Thread(target=read, args=("second", second)),
                threading.Thread(target=lambda: got.update(async_=asyncio.run(count()))),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            assert got == {"first": 240, "second": 240, "async_": 240}
            times = [r.time for r in sb.requests]
            # 6 pages each, plus the token requests (one shared token, or a few when the hooks
            # start at the same instant and each finds none cached yet)
            assert len([r for r in sb.requests if r.path != "/auth/v1/tokens"]) >= 3 * 6
            assert sb.stats.get("429", 0) == 0, sb.stats
            for i, moment in enumerate(times):
                assert sum(1 for t in times[i:] if t < moment + 1.0) <= 5


class TestBadInput:
    @pytest.mark.parametrize(
        "call, message",
        [
            (lambda h: h.iter_activities(START, START + timedelta(days=1), "sms"), "activity_type='sms'"),
            (lambda h: h.iter_activities(START.replace(tzinfo=None), START + timedelta(days=1)), "start=.* naive"),
            (lambda h: h.iter_activities(START, START), "end .* must be after start"),
            (lambda h: h.iter_activities(START, START + timedelta(days=800)), "731-day limit"),
            (lambda h: h.iter_participants(START, START - timedelta(days=1)), "must be after start"),
            (lambda h: h.count_ingested(START.replace(tzinfo=None)), "since=.* naive"),
            (lambda h: h.count_ingested(START, START, "call"), "until .* must be after since"),
        ],
    )
    def test_rejected_before_any_call(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, call: Any, message: str) -> None:
        hook = connect(monkeypatch, sandbox)
        with pytest.raises(ValueError, match=message):
            result = call(hook)
            list(result) if not hasattr(result, "count") else None
        assert sandbox.requests == []

    def test_plain_http_to_remote_host_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(
            "AIRFLOW_CONN_PEOPLEAI_DEFAULT",
            '{"conn_type": "peopleai", "host": "http://api.people.ai", "login": "k", "password": "' + SECRET + '"}',
        )
        with pytest.raises(ValueError, match="plain http is refused") as err:
            PeopleAIHook().config
        assert SECRET not in str(err.value)


class TestSecrets:
    def test_secret_and_token_never_logged_or_raised(
        self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        hook = connect(monkeypatch, sandbox, max_retries=1)
        sandbox.faults.fail_next(1, 503, include_token=True)
        sandbox.faults.expire_tokens_after(2)
        with caplog.at_level(logging.DEBUG):
            list(hook.iter_activities(START, START + timedelta(days=2)))
            tokens = list(sandbox.token_uses())
            sandbox.faults.fail_next(10, 502)
            with pytest.raises(PeopleAIAPIError) as err:
                list(hook.iter_activities(START, START + timedelta(days=1)))
        assert tokens
        text = caplog.text + str(err.value) + repr(hook) + repr(hook.config)
        for secret in [SECRET, *tokens]:
            assert secret not in text


class TestEverythingAtOnce:
    def test_three_day_window_exact_under_every_fault(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Issue 2's acceptance run: 429s, 503s, a dropped connection, a revoked token, a page-size
        cap, overlapping pages and ignored filters in one read; the result is exactly the window.
        """
        with Sandbox(seed=21, activities=4000, start=START, days=10, rate_limit=None, client_secret=SECRET) as sb:
            hook = connect(monkeypatch, sb, page_size=200, max_concurrency=4)
            faults = sb.faults
            faults.cap_page_size(150)
            faults.overlap_pages()
            faults.ignore_filters()
            faults.fail_next(3, 429)
            faults.fail_next(2, 503)
            faults.drop_connection(2)
            faults.invalid_json(1)
            start, end = START + timedelta(days=3), START + timedelta(days=6)
            stream = hook.stream_activities(start, end)
            got: list[dict[str, Any]] = []
            for number, page in enumerate(stream):
                got.extend(page)
                if number == 1:
                    sb.revoke_tokens()
            expected = sb.expected_activities(start, end)
            assert [r["uid"] for r in got] == uids(expected)
            assert len(got) == len({r["uid"] for r in got})
            assert stream.stats.outside > 0  # the filters were ignored: everything came back
            assert stream.stats.seen == 4001  # ... and the overlap served one record twice
            fired = sb.stats
            for knob in ("fail_next", "drop_connection", "invalid_json"):
                assert fired.get(knob, 0) > 0, knob
            assert fired.get("401", 0) >= 1
            assert sb.errors == []


class _ForwardProxy:
    """A plain HTTP forward proxy on loopback that records what it forwards (absolute-form requests)."""

    def __init__(self) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        self.forwarded: list[tuple[str, str | None]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                target = urlsplit(self.path)
                proxy.forwarded.append((target.path, self.headers.get("Authorization")))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("proxy-connection", "connection")}
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                upstream.request(self.command, f"{target.path}?{target.query}" if target.query else target.path, body or None, headers)
                answer = upstream.getresponse()
                payload = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                upstream.close()

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def env_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[_ForwardProxy]:
    """A :class:`_ForwardProxy` named by ``HTTP_PROXY``, with ``NO_PROXY`` unset."""
    proxy = _ForwardProxy()
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    try:
        yield proxy
    finally:
        proxy.stop()


class TestEnvironment:
    """The hook reads proxies from the environment once per origin (not per request) and never ~/.netrc."""

    def test_env_proxy_is_used_and_netrc_is_not(
        self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, env_proxy: _ForwardProxy
    ) -> None:
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-password\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        hook = connect(monkeypatch, sandbox)
        end = START + timedelta(days=1)
        assert uids(list(hook.iter_activities(START, end))) == uids(sandbox.expected_activities(START, end))
        paths = [path for path, _ in env_proxy.forwarded]
        assert TOKEN_PATH in paths and len(paths) == len(sandbox.requests)
        assert all(auth is None or auth.startswith("Bearer ") for path, auth in env_proxy.forwarded if path != TOKEN_PATH)

    def test_no_proxy_bypasses_it(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        proxy = _ForwardProxy()
        try:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            hook = connect(monkeypatch, sandbox)
            assert list(hook.iter_activities(START, START + timedelta(days=1)))
            assert proxy.forwarded == [] and sandbox.requests
        finally:
            proxy.stop()


class TestSessionEnvironment:
    """What the hook's session takes from the environment, next to what requests would do."""

    def test_redirects_get_the_proxy_of_their_own_host(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import requests

        from airflow_provider_activities.hooks._session import Session as _Session

        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
        monkeypatch.setenv("NO_PROXY", "api.internal")
        session = _Session()
        assert session.environment_proxies.for_url("https://api.internal/v0") == {}
        redirected = requests.Request("GET", "https://bucket.example/file").prepare()
        assert session.rebuild_proxies(redirected, {})["https"] == "http://proxy.example:3128"
        with requests.Session() as plain:  # the same as requests with trust_env
            assert plain.rebuild_proxies(requests.Request("GET", "https://bucket.example/file").prepare(), {})["https"] == (
                "http://proxy.example:3128"
            )

    def test_ca_bundle_applies_while_verification_is_on(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
        from airflow_provider_activities.hooks._session import Session as _Session

        bundle = tmp_path / "ca.pem"
        bundle.write_text("")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
        session = _Session()
        assert session.merge_environment_settings("https://api.people.ai/x", {}, None, None, None)["verify"] == str(bundle)
        session.verify = False
        assert session.merge_environment_settings("https://api.people.ai/x", {}, None, None, None)["verify"] is False
        assert session.merge_environment_settings("https://api.people.ai/x", {}, None, False, None)["verify"] is False

    def test_get_conn_used_directly_goes_through_the_env_proxy(
        self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, env_proxy: _ForwardProxy
    ) -> None:
        hook = connect(monkeypatch, sandbox)
        answer = hook.get_conn().post(
            sandbox.base_url + TOKEN_PATH,
            data={"grant_type": "client_credentials", "client_id": sandbox.client_id, "client_secret": SECRET},
        )
        assert answer.status_code == 200 and [path for path, _ in env_proxy.forwarded] == [TOKEN_PATH]

    def test_async_hook_takes_a_proxy_without_a_scheme(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from airflow_provider_activities.api.config import EnvironmentProxies

        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", "proxy.example:3128")
        assert EnvironmentProxies().proxy_url("https://api.people.ai") == "http://proxy.example:3128"
        monkeypatch.setenv("NO_PROXY", "api.people.ai")
        assert EnvironmentProxies().proxy_url("https://api.people.ai") is None


class TestReadAhead:
    """``read_ahead``: the page generator runs in a thread of its own, a bounded distance ahead."""

    @staticmethod
    def _numbers(log: list[str], count: int, fail_at: int | None = None) -> Iterator[int]:
        import threading

        try:
            for number in range(count):
                if number == fail_at:
                    raise ValueError(f"page {number} failed")
                log.append(f"made {number} in {threading.current_thread().name}")
                yield number
        finally:
            log.append(f"closed in {threading.current_thread().name}")

    def test_yields_every_item_in_order_made_in_another_thread(self) -> None:
        from airflow_provider_activities.hooks._streams import read_ahead

        log: list[str] = []
        assert list(read_ahead(self._numbers(log, 50), depth=4, name="ahead")) == list(range(50))
        assert log[0] == "made 0 in ahead" and log[-1] == "closed in ahead"

    def test_runs_at_most_depth_items_ahead(self) -> None:
        import time

        from airflow_provider_activities.hooks._streams import read_ahead

        log: list[str] = []
        items = read_ahead(self._numbers(log, 100), depth=3)
        assert next(items) == 0
        time.sleep(0.3)  # the producer fills the queue, then waits
        made = sum(entry.startswith("made") for entry in log)
        assert 4 <= made <= 5  # the one consumed, three parked, at most one in the producer's hand
        items.close()

    def test_a_failure_of_the_producer_is_raised_to_the_consumer(self) -> None:
        from airflow_provider_activities.hooks._streams import read_ahead

        log: list[str] = []
        got = []
        with pytest.raises(ValueError, match="page 3 failed"):
            for number in read_ahead(self._numbers(log, 10, fail_at=3), depth=2):
                got.append(number)
        assert got == [0, 1, 2] and log[-1].startswith("closed")

    def test_a_consumer_that_stops_early_stops_and_closes_the_producer(self) -> None:
        import threading

        from airflow_provider_activities.hooks._streams import read_ahead

        log: list[str] = []
        before = threading.active_count()
        items = read_ahead(self._numbers(log, 10_000), depth=2, name="stopped")
        for number in items:
            if number == 5:
                break
        items.close()  # what the streams do when their loop ends, fails or is left
        assert log[-1] == "closed in stopped"  # closed by the producer thread, before close() returned
        assert sum(entry.startswith("made") for entry in log) < 20
        assert threading.active_count() == before

    @pytest.mark.parametrize("how", ["break", "raise"])
    @pytest.mark.parametrize("kind", ["batches", "dicts"])
    def test_leaving_a_stream_loop_stops_its_requests(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, how: str, kind: str) -> None:
        """No ``close()`` call: leaving the loop (``break`` or an exception in its body) stops the
        read-ahead thread and its page threads, and no request is sent afterwards.
        """
        import gc
        import threading
        import time

        from airflow_provider_activities.hooks import _streams as streams_module

        monkeypatch.setattr(streams_module, "BATCH_ROWS", 30)  # a batch every 3 pages
        hook = connect(monkeypatch, sandbox, page_size=10, max_concurrency=3)
        end = START + timedelta(days=6)
        stream = hook.stream_activity_batches(START, end) if kind == "batches" else hook.stream_activities(START, end)

        def consume() -> None:
            for _ in stream:
                if how == "raise":
                    raise RuntimeError("the writer failed")
                break

        if how == "raise":
            with pytest.raises(RuntimeError, match="the writer failed"):
                consume()
        else:
            consume()
        gc.collect()
        sent = len(data_requests(sandbox))
        time.sleep(0.3)
        assert len(data_requests(sandbox)) == sent < pages_for(sandbox, START, end, 10)
        assert not [t.name for t in threading.enumerate() if t.name.startswith(("peopleai-read-ahead", "peopleai-page"))]
        hook.close()
