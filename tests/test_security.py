"""Security suite (issue 8): secrets never leak, TLS verification defaults on, path traversal refused,
malicious or broken API answers refused with a clear error and nothing written.

``http://`` to a non-loopback host is refused: see ``tests/test_hook.py``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from airflow_provider_activities.api.errors import PeopleAIAPIError
from airflow_provider_activities.api.protocol import DEFAULT_MAX_RESPONSE_BYTES
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.test_operators import (  # noqa: F401 - fixtures
    DAY,
    NOV_2,
    START,
    _execute_outside_the_task_runner,
    activities_op,
    activity_uids_by_partition,
    api,
    connect,
    contents,
    data_requests,
    expected_activity_uids,
    lake,
    read_dataset,
    root_of,
    run,
    sandbox,
    sha256s,
)

CANARY = "SECRET-CANARY-7f3a"


@pytest.fixture
def canary_api(monkeypatch: pytest.MonkeyPatch) -> Any:
    with Sandbox(seed=7, activities=400, start=START, days=2, rate_limit=None, client_secret=CANARY) as sb:
        connect(monkeypatch, sb)
        yield sb


def test_no_secret_or_token_in_logs_xcom_manifests_templates_or_errors(
    canary_api: Sandbox, tmp_path: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    output = lake(tmp_path)
    seen: list[str] = []
    # success with faults: retries, token expiry, invalid JSON
    canary_api.faults.fail_next(2, 503)
    canary_api.faults.invalid_json(1)
    op = activities_op(output)
    seen.append(json.dumps(run(op, START, START + 2 * DAY), default=str))
    seen.extend(repr(getattr(op, f)) for f in op.template_fields)
    # failures: token endpoint down, 401 everywhere
    canary_api.faults.reset()
    canary_api.revoke_tokens()
    canary_api.faults.token_endpoint_down(10_000)
    with pytest.raises(Exception) as info:
        run(activities_op(output), START, START + DAY)
    seen.append(repr(info.value) + str(info.value) + repr(info.value.__cause__) + repr(info.value.__context__))
    for data in contents(root_of(output)).values():
        seen.append(data.decode("utf-8", "replace"))
    captured = capsys.readouterr()
    seen += [captured.out, captured.err, caplog.text]
    seen += [repr(r.args) + r.getMessage() for r in caplog.records]
    tokens = list(canary_api.token_uses())
    assert tokens, "the sandbox issued tokens"
    blob = "\n".join(seen)
    assert CANARY not in blob
    for token in tokens:
        assert token not in blob


def test_tls_verification_is_on_by_default(canary_api: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = PeopleAIHook()
    assert hook.config.verify_ssl is True
    assert hook.get_conn().verify is True


def test_turning_tls_verification_off_warns(
    canary_api: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    connect(monkeypatch, canary_api, verify_ssl=False)
    caplog.set_level(logging.WARNING)
    hook = PeopleAIHook()
    assert hook.get_conn().verify is False
    captured = capsys.readouterr()
    assert "verify_ssl=false" in caplog.text + captured.out + captured.err  # the task logger is structlog


@pytest.mark.parametrize("template", ["{{ params.root }}/../escape", "{{ params.root }}/a/./b"])
def test_a_templated_output_path_with_dot_segments_is_refused_before_any_call(
    canary_api: Sandbox, tmp_path: Any, template: str
) -> None:
    canary_api.reset_log()
    op = activities_op(template)
    with pytest.raises(ValueError, match="output_path"):
        run(op, START, params={"root": lake(tmp_path)})
    assert data_requests(canary_api) == []
    assert not (tmp_path / "escape").exists() and not (tmp_path / "lake").exists()


# -- malicious or broken API answers -----------------------------------------------------------
#
# A small proxy on loopback (``CraftedAPI``) forwards every request to the sandbox, except the
# page at one offset, which it answers with a crafted body: huge, nested 100k levels deep, of the
# wrong types, or not JSON at all. Each must fail the task with a clear error naming what is
# wrong, leave the previous partitions byte-identical and no staging visible; a refused answer is
# not retried.

BAD_OFFSET = 100  # the second page of 100 (``connect`` asks for pages of 100)


class CraftedAPI:
    """A loopback proxy to ``upstream`` (a sandbox) that answers the page at ``offset`` with ``body``.

    :param upstream: the sandbox (tokens and the other pages come from it).
    :param body: the crafted body (bytes, sent with a ``Content-Length``).
    :param content_type: its ``Content-Type``.
    :param offset: the page offset that gets the crafted body (every path); ``None`` for all pages.

    Use as a context manager: it serves from a daemon thread and stops (closing its socket) on
    exit; every connection times out after 30 s, so nothing outlives the test.
    """

    def __init__(self, upstream: Sandbox, body: bytes, content_type: str = "application/json", offset: int | None = BAD_OFFSET) -> None:
        self.sandbox = upstream
        self.upstream = upstream.base_url
        self.body = body
        self.content_type = content_type
        self.offset = offset
        self.crafted_answers = 0
        self.data_requests: list[str] = []
        self._server: Any = None
        self._thread: Any = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def connection_json(self, **extra: Any) -> str:
        """The sandbox's connection, pointed at this proxy."""
        return json.dumps(
            {"conn_type": "peopleai", "host": self.base_url, "login": self.sandbox.client_id,
             "password": self.sandbox.client_secret, "extra": extra}
        )

    def __enter__(self) -> CraftedAPI:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # the token endpoint
                self._forward()

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                query = parse_qs(urlsplit(self.path).query)
                proxy.data_requests.append(self.path)
                if proxy.offset is None or query.get("offset") == [str(proxy.offset)]:
                    proxy.crafted_answers += 1
                    self.send_response(200)
                    self.send_header("Content-Type", proxy.content_type)
                    self.send_header("Content-Length", str(len(proxy.body)))
                    self.end_headers()
                    view = memoryview(proxy.body)
                    for start in range(0, len(view), 1 << 20):
                        self.wfile.write(view[start : start + (1 << 20)])
                    return
                self._forward()

            def _forward(self) -> None:
                import http.client
                from urllib.parse import urlsplit

                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else None
                target = urlsplit(proxy.upstream)
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type", "accept")}
                    upstream.request(self.command, self.path, body=payload, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _records(count: int, prefix: str = "crafted") -> list[dict[str, Any]]:
    moment = int(NOV_2.timestamp() * 1000)
    return [{"uid": f"{prefix}-{i:07d}", "activity_type": "email", "timestamp": moment + i} for i in range(count)]


def _envelope(data: Any, total: Any = 1000) -> bytes:
    return json.dumps({"data": data, "meta": {"limit": 100, "offset": BAD_OFFSET, "total": total}}).encode()


def _deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def _huge_page(records: int = 1_000_000) -> bytes:
    """``limit`` ignored: a page of ``records`` small activities, one body of about 80 MiB."""
    moment = int(NOV_2.timestamp() * 1000)
    parts = [b'{"data":[']
    parts.append(
        b",".join(
            b'{"uid":"huge-%07d","activity_type":"email","timestamp":%d,"subject":"limit ignored"}' % (i, moment)
            for i in range(records)
        )
    )
    parts.append(b'],"meta":{"limit":100,"offset":100,"total":%d}}' % records)
    return b"".join(parts)


# (id, body, content type, pattern the error must match, whether the answer is retried)
CRAFTED: list[tuple[str, bytes, str, str, bool]] = [
    ("deep-bare", _deep(100_000), "application/json", r"nested deeper than the decoder allows", False),
    ("deep-in-data", b'{"data":' + _deep(100_000) + b',"meta":{"total":5}}', "application/json", r"nested deeper", False),
    ("data-a-string", _envelope("oops"), "application/json", r"page 'data' is a string \('oops'\), not a list", False),
    ("data-an-object", _envelope({"uid": "x"}), "application/json", r"page 'data' is an object .*not a list", False),
    ("no-data", b'{"items": [], "meta": {"total": 3}}', "application/json", r"page is an object without 'data' \(keys: items, meta\)", False),
    ("total-a-string", _envelope(_records(3), total="1000"), "application/json", r"'meta.total' is a string \('1000'\), not a count", False),
    ("total-negative", _envelope(_records(3), total=-1), "application/json", r"'meta.total' is a number \(-1\), not a count", False),
    ("meta-a-list", json.dumps({"data": _records(3), "meta": [1000]}).encode(), "application/json", r"page 'meta' is a list", False),
    ("records-not-objects", _envelope([1, 2, 3]), "application/json", r"record 0 of the page is a number \(1\), not an object", False),
    ("record-a-list", _envelope(_records(2) + [["uid", "x"]]), "application/json", r"record 2 of the page is a list", False),
    (
        "timestamp-a-list",
        _envelope(_records(2) + [{"uid": "bad-ts", "timestamp": [2026, 11, 2]}]),
        "application/json",
        r"record 2 of the page \(uid 'bad-ts'\): field 'timestamp' is a list \(\[2026, 11, 2\]\), not a timestamp",
        False,
    ),
    (
        "timestamp-a-boolean",
        _envelope([{"uid": "bool-ts", "timestamp": 1793577600000, "created_at": True}]),
        "application/json",
        r"\(uid 'bool-ts'\): field 'created_at' is a boolean",
        False,
    ),
    ("html", b"<html><body>Service temporarily unavailable</body></html>", "text/html", r"invalid JSON body .*Content-Type text/html", True),
    ("truncated", _envelope(_records(50))[:700], "application/json", r"invalid JSON body \(700 bytes\)", True),
]


@pytest.mark.parametrize(
    "body,content_type,pattern,retried", [case[1:] for case in CRAFTED], ids=[case[0] for case in CRAFTED]
)
def test_a_malicious_or_broken_page_fails_clearly_and_writes_nothing(
    api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, body: bytes, content_type: str, pattern: str, retried: bool
) -> None:
    output = lake(tmp_path)
    run(activities_op(output), NOV_2)
    before = sha256s(contents(root_of(output)))
    with CraftedAPI(api, body, content_type) as crafted:
        connect(monkeypatch, crafted, max_retries=2)
        with pytest.raises(PeopleAIAPIError, match=pattern) as info:
            run(activities_op(output), NOV_2)
    assert f"offset {BAD_OFFSET}" in str(info.value) and "HTTP 200" in str(info.value)
    assert crafted.crafted_answers == (3 if retried else 1)
    if not retried:
        assert "answer refused" in str(info.value)
    after = sha256s(contents(root_of(output)))
    assert {p: h for p, h in after.items() if "_staging" not in p} == before
    assert_previous_data_readable(api, output)


def test_a_huge_page_is_refused_at_once_and_writes_nothing(api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """``limit`` ignored: one million records (about 80 MiB) for a page of 100, over the 64 MiB cap."""
    output = lake(tmp_path)
    run(activities_op(output), NOV_2)
    before = sha256s(contents(root_of(output)))
    body = _huge_page()
    assert len(body) > DEFAULT_MAX_RESPONSE_BYTES
    with CraftedAPI(api, body) as crafted:
        connect(monkeypatch, crafted, max_retries=2)
        with pytest.raises(PeopleAIAPIError, match=r"answer refused: its body \([\d,]+ bytes read\) is over the cap of 67,108,864 bytes \(asked for limit=100 records"):
            run(activities_op(output), NOV_2)
    assert crafted.crafted_answers == 1  # not retried
    after = sha256s(contents(root_of(output)))
    assert {p: h for p, h in after.items() if "_staging" not in p} == before
    assert_previous_data_readable(api, output)


def test_an_unparseable_timestamp_string_fails_naming_the_value_and_writes_nothing(
    api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    output = lake(tmp_path)
    run(activities_op(output), NOV_2)
    before = sha256s(contents(root_of(output)))
    body = _envelope(_records(2) + [{"uid": "word-ts", "activity_type": "email", "timestamp": "yesterday"}])
    with CraftedAPI(api, body) as crafted:
        connect(monkeypatch, crafted, max_retries=2)
        with pytest.raises(ValueError, match="'yesterday'"):
            run(activities_op(output), NOV_2)
    after = sha256s(contents(root_of(output)))
    assert {p: h for p, h in after.items() if "_staging" not in p} == before
    assert_previous_data_readable(api, output)


def assert_previous_data_readable(sb: Sandbox, output: str) -> None:
    """Readers see exactly the day the first run wrote, and no staging under the datasets."""
    table = read_dataset(root_of(output), "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(sb, NOV_2, 1)
    assert not [p for p in contents(root_of(output)) if p.startswith("activities/") and "_staging" in p]


def _drive(flow: Any, answer: Any) -> Any:
    """Run a call flow with no I/O: every send gets ``answer``; tokens, slots and sleeps are free."""
    from airflow_provider_activities.api.flow import NeedToken, Send

    sent = 0
    try:
        action = next(flow)
        while True:
            if isinstance(action, Send):
                sent += 1
                action = flow.send(answer)
            elif isinstance(action, NeedToken):
                action = flow.send("token")
            else:
                action = flow.send(None)
    except StopIteration as finished:
        return finished.value, sent


def test_the_body_cap_follows_the_configured_extra_and_the_page_size() -> None:
    from airflow_provider_activities.api.flow import Response, call_flow
    from airflow_provider_activities.api.policy import RetryPolicy
    from airflow_provider_activities.api.protocol import max_response_bytes, page_request, parse_page

    assert max_response_bytes(100) == max_response_bytes(None) == DEFAULT_MAX_RESPONSE_BYTES
    assert max_response_bytes(100_000) == 100_000 * 16 * 1024  # large pages get 16 KiB a record
    assert max_response_bytes(100_000, configured=2048) == 2048
    body = _envelope(_records(100))
    policy = RetryPolicy(max_retries=3, base=0, cap=0)
    page, sent = _drive(call_flow(page_request("/v0/public/activities", {}, 0, 100), parse_page, policy), Response(200, {}, body))
    assert len(page.records) == 100 and sent == 1
    capped = page_request("/v0/public/activities", {}, 0, 100, max_body_bytes=len(body) - 1)
    with pytest.raises(PeopleAIAPIError, match=rf"over the cap of {len(body) - 1:,} bytes") as info:
        _drive(call_flow(capped, parse_page, policy), Response(200, {}, body))
    assert info.value.attempts == 1  # refused, not retried


def test_a_deeply_nested_error_body_still_gives_the_status() -> None:
    from airflow_provider_activities.api.flow import Response, call_flow
    from airflow_provider_activities.api.policy import RetryPolicy
    from airflow_provider_activities.api.protocol import page_request, parse_page

    request = page_request("/v0/public/activities", {}, 0, 100)
    with pytest.raises(PeopleAIAPIError, match="HTTP 400") as info:
        _drive(call_flow(request, parse_page, RetryPolicy(2, 0, 0)), Response(400, {}, _deep(100_000)))
    assert "[[[[" in info.value.message  # the body's start, since it is no error envelope


def test_the_max_response_bytes_extra_is_checked() -> None:
    from airflow_provider_activities.api.config import ClientConfig

    def config(**extra: Any) -> ClientConfig:
        return ClientConfig.from_connection("peopleai_default", "http://127.0.0.1:1", "id", "secret", extra)

    assert config().max_response_bytes is None
    assert config(max_response_bytes="4096").max_response_bytes == 4096
    with pytest.raises(ValueError, match="'max_response_bytes' must be at least 1024"):
        config(max_response_bytes=10)
    with pytest.raises(ValueError, match="'max_response_bytes' must be a integer"):
        config(max_response_bytes="big")


def test_a_configured_body_cap_refuses_pages_over_it(api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    connect(monkeypatch, api, max_response_bytes=10_000)  # a sandbox page of 100 activities is ~78 kB
    with pytest.raises(PeopleAIAPIError, match=r"over the cap of 10,000 bytes"):
        run(activities_op(lake(tmp_path)), NOV_2)
    assert not (tmp_path / "lake").exists()
