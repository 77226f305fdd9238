"""PeopleAINewActivitiesTrigger driven directly in an event loop, against the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.hooks.peopleai_async import PeopleAIAsyncHook
from airflow_provider_activities.testing.sandbox import Sandbox
from airflow_provider_activities.triggers import peopleai as triggers_module
from airflow_provider_activities.triggers.peopleai import PeopleAINewActivitiesTrigger

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
FAR = START + timedelta(days=60)
SECRET = "trigger-test-secret-91c3"
FAST = {"page_size": 200, "requests_per_second": 10_000, "backoff_base": 0.01, "backoff_max": 0.05}


def connect(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, **extra: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(**{**FAST, **extra}))


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox(seed=11, activities=1200, start=START, days=4, rate_limit=None, client_secret=SECRET) as sb:
        connect(monkeypatch, sb)
        yield sb
        assert sb.errors == []


def run_trigger(trigger: PeopleAINewActivitiesTrigger, during: Callable[[], Any] | None = None, after: float = 0.0) -> list[dict[str, Any]]:
    """Every event ``trigger.run()`` fires, in a new event loop (the triggerer's way, minus the
    triggerer); ``during`` is called ``after`` seconds into the run, from the loop.
    """

    async def collect() -> list[dict[str, Any]]:
        if during is not None:
            asyncio.get_running_loop().call_later(after, during)
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def trigger(**kwargs: Any) -> PeopleAINewActivitiesTrigger:
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("deadline", datetime.now(UTC) + timedelta(seconds=20))
    return PeopleAINewActivitiesTrigger(**kwargs)


def sync_answer(since: datetime, activity_type: str | None = None) -> dict[str, Any]:
    hook = PeopleAIHook()
    try:
        answer = hook.count_ingested(since, activity_type=activity_type)
    finally:
        hook.close()
    latest = answer.latest_ingested_at.isoformat() if answer.latest_ingested_at else None
    return {"count": answer.count, "latest_ingested_at": latest}


class TestEvents:
    def test_success_when_data_is_there(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=2, hours=5)
        events = run_trigger(trigger(ingested_since=since.isoformat()))
        expected = sync_answer(since)
        assert expected["count"] == len(sandbox.expected_activities(since, FAR, by="created_at")) > 0
        assert events == [{"status": "success", **expected}]

    def test_typed_and_min_count(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=3)
        expected = sync_answer(since, "call")
        events = run_trigger(trigger(ingested_since=since, activity_type="call", min_count=expected["count"]))
        assert events == [{"status": "success", **expected}]

    def test_success_when_data_arrives_later(self, sandbox: Sandbox) -> None:
        arrived = FAR + timedelta(minutes=7)
        events = run_trigger(
            trigger(ingested_since=FAR, min_count=2),
            during=lambda: sandbox.add_activities(2, timestamp=FAR, created_at=arrived),
            after=0.4,
        )
        assert events == [{"status": "success", "count": 2, "latest_ingested_at": arrived.isoformat()}]
        polls = [r for r in sandbox.requests if r.path == "/v0/public/activities"]
        assert len(polls) >= 3  # it polled, found nothing, and polled again

    def test_timeout_at_the_deadline(self, sandbox: Sandbox) -> None:
        sandbox.add_activities(1, timestamp=FAR, created_at=FAR + timedelta(hours=1))
        deadline = datetime.now(UTC) + timedelta(seconds=0.5)
        (event,) = run_trigger(trigger(ingested_since=FAR, min_count=5, deadline=deadline.timestamp()))
        assert datetime.now(UTC) >= deadline
        assert event["status"] == "timeout" and event["count"] == 1
        assert event["latest_ingested_at"] == (FAR + timedelta(hours=1)).isoformat()
        assert "1 of 5 activities ingested since" in event["message"]

    def test_timeout_with_a_deadline_already_passed_polls_once(self, sandbox: Sandbox) -> None:
        (event,) = run_trigger(trigger(ingested_since=FAR, deadline=(datetime.now(UTC) - timedelta(seconds=1)).isoformat()))
        assert event == {"status": "timeout", "count": 0, "latest_ingested_at": None, "message": event["message"]}
        assert len([r for r in sandbox.requests if r.path == "/v0/public/activities"]) == 1

    def test_transient_errors_are_retried_not_reported_as_no_data(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        connect(monkeypatch, sandbox, max_retries=1)
        sandbox.faults.fail_next(5, 503)  # more than one poll's retries: the next poll tries again
        sandbox.faults.fail_next(1, 429)
        since = START + timedelta(days=1)
        (event,) = run_trigger(trigger(ingested_since=since))
        assert event["status"] == "success" and event["count"] == len(sandbox.expected_activities(since, FAR, by="created_at"))
        assert sandbox.stats["503"] == 5 and sandbox.stats["429"] == 1

    def test_api_still_failing_at_the_deadline_is_an_error(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        connect(monkeypatch, sandbox, max_retries=0)
        sandbox.faults.fail_ratio(1.0, 502)
        (event,) = run_trigger(trigger(ingested_since=START, deadline=datetime.now(UTC) + timedelta(seconds=0.4)))
        assert event["status"] == "error" and event["error_type"] == "api"
        assert "still failing at the deadline" in event["message"] and "HTTP 502" in event["message"]


class TestPermanentErrors:
    def test_bad_credentials(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(**FAST).replace(SECRET, "not-the-secret"))
        (event,) = run_trigger(trigger(ingested_since=START))
        assert event["status"] == "error" and event["error_type"] == "auth"
        assert "rejected the credentials of connection 'peopleai_default'" in event["message"]
        assert "not-the-secret" not in json.dumps(event) and SECRET not in json.dumps(event)
        assert len(sandbox.requests) == 1  # no retry of a rejected secret

    def test_a_4xx(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        connect(monkeypatch, sandbox, page_size=5000)
        sandbox.max_page_size = 1000
        (event,) = run_trigger(trigger(ingested_since=START))
        assert event["status"] == "error" and event["error_type"] == "api" and "HTTP 400" in event["message"]
        for token in sandbox.token_uses():
            assert token not in json.dumps(event)

    def test_missing_or_invalid_connection(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        (event,) = run_trigger(trigger(ingested_since=START, peopleai_conn_id="no_such_connection"))
        assert event["status"] == "error" and event["error_type"] == "connection"
        assert "no_such_connection" in event["message"]
        connect(monkeypatch, sandbox, page_size="lots")
        (event,) = run_trigger(trigger(ingested_since=START))
        assert event["error_type"] == "connection" and "'page_size' must be a integer" in event["message"]
        assert sandbox.requests == []


class TestSerialization:
    def test_round_trip_from_classpath_and_kwargs(self) -> None:
        original = PeopleAINewActivitiesTrigger(
            ingested_since="2026-11-03T00:00:00Z",
            activity_type="email",
            min_count=5,
            peopleai_conn_id="peopleai_prod",
            poke_interval=30,
            deadline=1_793_750_400,  # epoch seconds: 2026-11-04T00:00:00Z
            exponential_backoff=True,
            max_wait=600,
        )
        classpath, kwargs = original.serialize()
        assert classpath == "airflow_provider_activities.triggers.peopleai.PeopleAINewActivitiesTrigger"
        assert kwargs == {
            "ingested_since": "2026-11-03T00:00:00+00:00",
            "activity_type": "email",
            "min_count": 5,
            "peopleai_conn_id": "peopleai_prod",
            "poke_interval": 30.0,
            "deadline": "2026-11-04T00:00:00+00:00",
            "exponential_backoff": True,
            "max_wait": 600.0,
        }
        module, name = classpath.rsplit(".", 1)
        again = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
        assert again.serialize() == (classpath, kwargs)

    def test_no_secret_in_serialized_kwargs(self, sandbox: Sandbox) -> None:
        PeopleAIHook().count_ingested(START + timedelta(days=3))  # a token exists
        _, kwargs = trigger(ingested_since=START).serialize()
        text = json.dumps(kwargs)
        for secret in [SECRET, sandbox.client_secret, *sandbox.token_uses()]:
            assert secret not in text
        assert not {"password", "login", "host", "extra", "token"} & set(kwargs)

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"ingested_since": "2026-11-01T00:00:00"}, "ingested_since=.* no timezone"),
            ({"ingested_since": datetime(2026, 11, 1)}, "ingested_since=.* no timezone"),
            ({"ingested_since": "soon"}, "ingested_since='soon' is not an ISO-8601"),
            ({"ingested_since": START, "activity_type": "fax"}, "activity_type='fax'"),
            ({"ingested_since": START, "min_count": 0}, "min_count=0"),
            ({"ingested_since": START, "deadline": "tomorrow"}, "deadline='tomorrow'"),
            ({"ingested_since": START, "poke_interval": -1}, "poke_interval=-1"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            PeopleAINewActivitiesTrigger(**kwargs)


class TestLifecycle:
    def test_session_closed_before_the_event_and_on_cancellation(
        self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        hooks: list[PeopleAIAsyncHook] = []

        class Recording(PeopleAIAsyncHook):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                hooks.append(self)

        monkeypatch.setattr(triggers_module, "PeopleAIAsyncHook", Recording)

        async def first_event_only() -> dict[str, Any]:
            # like dag.test(): take the first event and leave the generator suspended
            event = await anext(trigger(ingested_since=START).run())
            assert hooks[-1]._session is None
            return event.payload

        assert asyncio.run(first_event_only())["status"] == "success"

        async def cancelled() -> None:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(trigger(ingested_since=FAR, deadline=None).run()), timeout=0.3)
            assert hooks[-1]._session is None

        asyncio.run(cancelled())
        assert len(hooks) == 2

    def test_poll_intervals(self) -> None:
        now = datetime(2026, 11, 3, tzinfo=UTC)
        plain = PeopleAINewActivitiesTrigger(ingested_since=START, poke_interval=30)
        assert [plain._next_interval(n, now) for n in (1, 2, 5)] == [30.0, 30.0, 30.0]
        backoff = PeopleAINewActivitiesTrigger(ingested_since=START, poke_interval=30, exponential_backoff=True, max_wait=400)
        waits = [backoff._next_interval(n, now) for n in range(1, 8)]
        for n, wait in enumerate(waits, start=1):  # Airflow's: [b, 2b) with b = poke_interval * 2**(n-2)
            base = max(int(30 * 2 ** (n - 2)), 1)
            assert min(base, 400) <= wait < 2 * base and wait <= 400
        assert waits[-1] == 400
        capped = PeopleAINewActivitiesTrigger(ingested_since=START, poke_interval=30, deadline=now + timedelta(seconds=12))
        assert capped._next_interval(1, now) == 12.0
        assert capped._next_interval(1, now + timedelta(seconds=20)) == 0.0
