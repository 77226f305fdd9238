"""The connection form round-trips, bad settings fail at once, and connection tests answer quickly.

Airflow's secrets masker hides the value of every connection extra whose name contains one of
its sensitive words: the UI's hook metadata then gives the form ``***`` as the field's value, and
saving the form stores ``***``. These tests read the installed Airflow's masker and hook
metadata, build settings the way a saved form gives them, and time connection tests against
real sockets: a closed loopback port, a host name that cannot resolve, and the sandbox with a
wrong secret.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from airflow_provider_activities.api.config import (
    EXTRA_ALIASES,
    EXTRA_FIELDS,
    JOB_PATH_EXTRAS,
    MASKED_PLACEHOLDER,
    PATH_EXTRAS,
    ClientConfig,
)
from airflow_provider_activities.api.errors import ConnectionSettingsError, PeopleAIAPIError
from airflow_provider_activities.api.flow import NeedToken, Pace, Send, Sleep, call_flow
from airflow_provider_activities.api.policy import RetryPolicy
from airflow_provider_activities.api.protocol import ACTIVITIES_PATH, page_request, parse_page
from airflow_provider_activities.compat import AIRFLOW_V_3_0_PLUS, AirflowFailException, Connection
from airflow_provider_activities.hooks._common import client_config
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.testing.sandbox import Sandbox

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
CONNECTION_TEST_SECONDS = 10.0
"""How long a connection test may take to answer (the issue's "within about 10 s")."""


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(seed=5, activities=400, start=START, days=2, rate_limit=None) as sb:
        yield sb


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nothing else takes it) but not listening."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


def form_extras() -> dict[str, Any]:
    """The extras a new ``peopleai`` connection saved from the UI form carries: each field's value
    as the UI's hook metadata (``/ui/connections/hook_meta``) gives it, masked values included.
    """
    from airflow.api_fastapi.core_api.datamodels.connections import ConnectionHookMetaData
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "peopleai"]
    # The response model redacts the values of sensitive fields, as the API server sends them.
    sent = ConnectionHookMetaData.model_validate(meta.model_dump())
    assert sent.extra_fields is not None
    return {name: spec["value"] for name, spec in sent.extra_fields.items()}


def config(extra: dict[str, Any], host: str = "http://127.0.0.1:8765", password: str = "secret") -> ClientConfig:
    return ClientConfig.from_connection("peopleai_default", host=host, login="key", password=password, extra=extra)


def use_connection(monkeypatch: pytest.MonkeyPatch, host: str, password: str, **extra: Any) -> PeopleAIHook:
    """A hook on ``peopleai_default`` with these settings (an ``AIRFLOW_CONN_*`` variable)."""
    connection = {"conn_type": "peopleai", "host": host, "login": "sandbox-client-id", "password": password, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", json.dumps(connection))
    return PeopleAIHook()


# -- the form --------------------------------------------------------------------------------


def test_no_extra_name_is_one_airflows_masker_hides() -> None:
    from tests.airflow_compat import should_hide_value_for_key

    assert should_hide_value_for_key("token_path"), "the masker hides the former name: this check can fail"
    assert [name for name in EXTRA_FIELDS if should_hide_value_for_key(name)] == []


@pytest.mark.skipif(
    not AIRFLOW_V_3_0_PLUS,
    reason="the Airflow 3 UI's hook metadata (/ui/connections/hook_meta); Airflow 2.11's form comes from "
    "get_connection_form_widgets, checked in tests/test_provider.py",
)
def test_the_forms_values_are_the_defaults_and_make_the_default_settings() -> None:
    extras = form_extras()
    assert extras == {name: field.default for name, field in EXTRA_FIELDS.items()}
    assert MASKED_PLACEHOLDER not in extras.values()
    assert config(extras) == config({})


def test_the_extras_of_the_former_form_work(caplog: pytest.LogCaptureFixture) -> None:
    """What the former form stored: ``token_path`` masked, the other extras at their defaults."""
    former = {name: field.default for name, field in EXTRA_FIELDS.items() if name != "auth_path"}
    former["token_path"] = MASKED_PLACEHOLDER
    with caplog.at_level(logging.WARNING):
        settings = config(former)
    assert settings == config({})
    assert settings.token_path == "/auth/v1/tokens"
    assert "'token_path'" in caplog.text and "masked placeholder" in caplog.text


@pytest.mark.parametrize("name", [*EXTRA_FIELDS, *EXTRA_ALIASES])
def test_a_masked_placeholder_in_any_extra_is_unset_with_a_warning_naming_it(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        settings = config({name: MASKED_PLACEHOLDER})
    assert settings == config({})
    (warning,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert f"extra {name!r}" in warning.getMessage() and "taken as unset" in warning.getMessage()


def test_the_former_name_token_path_is_read_when_auth_path_is_unset() -> None:
    assert config({"token_path": "/oauth/token"}).token_path == "/oauth/token"
    assert config({"token_path": "/oauth/token", "auth_path": None}).token_path == "/oauth/token"
    assert config({"token_path": "/oauth/token", "auth_path": "/oauth/token"}).token_path == "/oauth/token"
    assert config({"auth_path": "/oauth/token"}).token_path == "/oauth/token"
    assert config({"token_path": "/oauth/token"}).unknown_extras == ()


def test_auth_path_and_token_path_that_disagree_fail_naming_both() -> None:
    with pytest.raises(ConnectionSettingsError, match=r"extras 'auth_path' \('/a'\) and 'token_path' \('/b'\) disagree"):
        config({"auth_path": "/a", "token_path": "/b"})


@pytest.mark.parametrize("name", [*PATH_EXTRAS, *EXTRA_ALIASES])
@pytest.mark.parametrize("value", ["auth/v1/tokens", "***/x", "https://api.people.ai/auth", "/with space/{job_id}"])
def test_a_path_extra_must_start_with_a_slash_and_the_error_names_it(name: str, value: str) -> None:
    with pytest.raises(ConnectionSettingsError, match=rf"extra '{name}' must be a URL path starting with '/'"):
        config({name: value})


@pytest.mark.parametrize("name", JOB_PATH_EXTRAS)
def test_an_export_job_path_must_hold_the_job_id(name: str) -> None:
    with pytest.raises(ConnectionSettingsError, match=rf"extra '{name}' must hold '{{job_id}}'"):
        config({name: "/pull/v1/export/activities/jobs"})


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:56909***",  # what a masked token_path appended to the host gave
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
        "https://exa mple.com",
        "https://a..b",
        "https://api.people.ai?key=1",
        "ftp://api.people.ai",
    ],
)
def test_a_malformed_host_fails_before_any_call_naming_it(host: str) -> None:
    with pytest.raises(ConnectionSettingsError) as err:
        config({}, host=host)
    assert f"host {host!r}" in str(err.value)


def test_a_masked_password_fails_saying_to_enter_the_secret_again() -> None:
    with pytest.raises(ConnectionSettingsError, match="masked placeholder '\\*\\*\\*', not a secret"):
        config({}, password=MASKED_PLACEHOLDER)


def test_invalid_settings_fail_the_task_without_retries_and_stay_a_value_error() -> None:
    """The API core raises a plain ValueError; the hooks raise it as an AirflowFailException too."""
    connection = Connection(conn_id="peopleai_default", conn_type="peopleai", host="https://api.people.ai",
                            login="key", password="secret", extra=json.dumps({"page_size": "many"}))
    with pytest.raises(ConnectionSettingsError) as err:
        client_config("peopleai_default", connection, logging.getLogger(__name__))
    assert isinstance(err.value, ValueError) and isinstance(err.value, AirflowFailException)
    assert "extra 'page_size' must be" in str(err.value)


# -- the retry rule (sans-I/O) ---------------------------------------------------------------


def drive(outcome: BaseException, policy: RetryPolicy) -> tuple[PeopleAIAPIError, int, list[float]]:
    """Run a page request's call flow whose every send meets ``outcome``; the final error, how
    many sends, and the sleeps asked for.
    """
    flow = call_flow(page_request(ACTIVITIES_PATH, {}, 0, 1), parse_page, policy)
    sends, sleeps = 0, []
    action = next(flow)
    try:
        while True:
            if isinstance(action, NeedToken):
                action = flow.send("token")
            elif isinstance(action, Pace):
                action = flow.send(None)
            elif isinstance(action, Send):
                sends += 1
                action = flow.send(outcome)
            else:
                assert isinstance(action, Sleep)
                sleeps.append(action.seconds)
                action = flow.send(None)
    except PeopleAIAPIError as err:
        return err, sends, sleeps
    raise AssertionError("the flow returned")


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.InvalidURL("Failed to parse: '127.0.0.1:56909***' is not a valid host or port"),
        requests.exceptions.MissingSchema("Invalid URL '127.0.0.1/x': No scheme supplied."),
        requests.exceptions.InvalidSchema("No connection adapters were found for 'ftp://x'"),
    ],
    ids=type,
)
def test_a_request_that_cannot_be_sent_fails_at_once(error: BaseException) -> None:
    err, sends, sleeps = drive(error, RetryPolicy(8, 1.0, 30.0))
    assert (sends, sleeps) == (1, [])
    assert err.permanent and err.status is None
    assert "not retried" in str(err) and type(error).__name__ in str(err)


def test_a_refused_connection_is_retried_up_to_the_budget() -> None:
    err, sends, sleeps = drive(requests.exceptions.ConnectionError("Connection refused"), RetryPolicy(3, 1.0, 30.0))
    assert sends == 4 and len(sleeps) == 3 and all(0.5 * 2**n <= s <= 2**n for n, s in enumerate(sleeps))
    assert not err.permanent and "after 4 attempts" in str(err)


def test_the_connection_test_budget_is_short_and_keeps_shorter_settings() -> None:
    short = config({}).for_connection_test()
    budget = (short.timeout, short.max_retries, short.backoff_base, short.backoff_max, short.retry_after_max)
    assert budget == (4.0, 1, 0.5, 0.5, 0.5)
    assert config({"timeout": 2, "max_retries": 0}).for_connection_test().timeout == 2.0
    assert config({"timeout": 2, "max_retries": 0}).for_connection_test().max_retries == 0
    policy = RetryPolicy.from_config(short)
    assert policy.delay(1, {"Retry-After": "120"}) == 0.5
    assert RetryPolicy.from_config(config({})).delay(1, {"Retry-After": "120"}) == 120.0


# -- connection tests and task-time retries on real sockets ----------------------------------


def timed_test(hook: PeopleAIHook) -> tuple[bool, str, float]:
    started = time.monotonic()
    ok, message = hook.test_connection()
    return ok, message, time.monotonic() - started


def test_a_connection_test_of_a_closed_port_answers_false_quickly(monkeypatch: pytest.MonkeyPatch, closed_port: int) -> None:
    hook = use_connection(monkeypatch, f"http://127.0.0.1:{closed_port}", "sandbox-client-secret")
    ok, message, seconds = timed_test(hook)
    assert not ok and seconds < CONNECTION_TEST_SECONDS, (message, seconds)
    assert "Connection refused" in message or "Failed to establish" in message, message


def test_a_connection_test_of_an_unknown_host_answers_false_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = use_connection(monkeypatch, "https://nonexistent.invalid", "sandbox-client-secret")
    ok, message, seconds = timed_test(hook)
    assert not ok and seconds < CONNECTION_TEST_SECONDS, (message, seconds)
    assert "nonexistent.invalid" in message, message


def test_a_connection_test_with_a_wrong_secret_answers_false_quickly(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox) -> None:
    hook = use_connection(monkeypatch, sandbox.base_url, "a-wrong-secret")
    ok, message, seconds = timed_test(hook)
    assert not ok and seconds < CONNECTION_TEST_SECONDS, (message, seconds)
    assert "rejected the credentials of connection 'peopleai_default'" in message
    assert "a-wrong-secret" not in message


def test_a_connection_saved_by_the_former_form_tests_true_and_reads_a_day_exactly(
    monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox
) -> None:
    former = {name: field.default for name, field in EXTRA_FIELDS.items() if name != "auth_path"}
    hook = use_connection(monkeypatch, sandbox.base_url, sandbox.client_secret, token_path=MASKED_PLACEHOLDER, **former)
    ok, message, seconds = timed_test(hook)
    assert ok and seconds < CONNECTION_TEST_SECONDS, message
    day = START + DAY
    reader = use_connection(monkeypatch, sandbox.base_url, sandbox.client_secret, token_path=MASKED_PLACEHOLDER, **former)
    assert [r["uid"] for r in reader.iter_activities(day, day + DAY)] == [
        r["uid"] for r in sandbox.expected_activities(day, day + DAY)
    ]


def test_a_refused_connection_at_task_time_is_retried_within_its_budget_and_logged(
    monkeypatch: pytest.MonkeyPatch, closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    hook = use_connection(
        monkeypatch, f"http://127.0.0.1:{closed_port}", "sandbox-client-secret", max_retries=3, backoff_base=0.05, backoff_max=0.1
    )
    with caplog.at_level(logging.WARNING), pytest.raises(PeopleAIAPIError) as err:
        hook.count_ingested(START)
    assert err.value.attempts == 4 and not err.value.permanent
    retries = [re.search(r"ConnectionError: .*; (retry \d+ of \d+) in", r.getMessage()) for r in caplog.records]
    assert [found.group(1) for found in retries if found] == ["retry 1 of 3", "retry 2 of 3", "retry 3 of 3"]
