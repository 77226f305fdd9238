"""Sensor, trigger and async client against the sandbox over real HTTP."""

from __future__ import annotations

import asyncio
import importlib
import logging
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from airflow_provider_activities.compat import AirflowFailException, AirflowSensorTimeout, AirflowSkipException
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.hooks.peopleai_async import PeopleAIAsyncHook
from airflow_provider_activities.sensors.peopleai import PeopleAINewActivitiesSensor
from airflow_provider_activities.testing.sandbox import Sandbox
from airflow_provider_activities.triggers.peopleai import PeopleAINewActivitiesTrigger
from tests.dag_support import airflow_db  # noqa: F401

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
SECRET = "sensor-test-client-secret-xyz"
FAR = START + timedelta(days=60)


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox(seed=4, activities=1200, start=START, days=4, rate_limit=None, client_secret=SECRET) as sb:
        connect(monkeypatch, sb)
        yield sb


def connect(monkeypatch: pytest.MonkeyPatch, sb: Sandbox, **extra: Any) -> None:
    settings: dict[str, Any] = {"page_size": 200, "requests_per_second": 10_000, "backoff_base": 0.001, "backoff_max": 0.01}
    settings.update(extra)
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sb.connection_json(**settings))


def truth(sb: Sandbox, since: datetime) -> tuple[int, str | None]:
    cutoff = since.timestamp() * 1000
    found = [r["created_at"] for r in sb.expected_activities(START, FAR) if r["created_at"] >= cutoff]
    latest = datetime.fromtimestamp(max(found) / 1000, UTC).isoformat() if found else None
    return len(found), latest


def sensor(**kwargs: Any) -> PeopleAINewActivitiesSensor:
    kwargs.setdefault("task_id", "wait")
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 5)
    return PeopleAINewActivitiesSensor(**kwargs)


def run_trigger(trigger: PeopleAINewActivitiesTrigger) -> list[dict[str, Any]]:
    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


class TestPokeMode:
    def test_data_present(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=2)
        result = sensor(ingested_since=since.isoformat()).execute({})
        count, latest = truth(sandbox, since)
        assert result == {"count": count, "latest_ingested_at": latest} and count > 0

    def test_absent_times_out_or_skips(self, sandbox: Sandbox) -> None:
        with pytest.raises(AirflowSensorTimeout):
            sensor(ingested_since=FAR.isoformat(), timeout=0.3).execute({})
        with pytest.raises(AirflowSkipException):
            sensor(ingested_since=FAR.isoformat(), timeout=0.3, soft_fail=True).execute({})

    def test_data_arriving_later(self, sandbox: Sandbox) -> None:
        since = FAR
        check = sensor(ingested_since=since.isoformat(), min_count=3, poke_interval=0.2, timeout=10)
        timer = threading.Timer(0.5, lambda: sandbox.add_activities(3, timestamp=since, created_at=since + timedelta(hours=1)))
        timer.start()
        try:
            result = check.execute({})
        finally:
            timer.cancel()
        assert result["count"] == 3
        assert result["latest_ingested_at"] == (since + timedelta(hours=1)).isoformat()

    def test_typed(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=3)
        got = sensor(ingested_since=since, activity_type="call").execute({})
        cutoff = since.timestamp() * 1000
        calls = [r for r in sandbox.expected_activities(START, FAR, "call") if r["created_at"] >= cutoff]
        assert got["count"] == len(calls)

    def test_bad_credentials_fail_at_once(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json().replace(SECRET, "nope-wrong"))
        with pytest.raises(AirflowFailException, match="rejected the credentials of connection 'peopleai_default'"):
            sensor(ingested_since=START.isoformat()).execute({})
        assert len(sandbox.requests) == 1

    def test_transient_errors_are_not_no_data(self, sandbox: Sandbox) -> None:
        sandbox.faults.fail_next(2, 503)
        sandbox.faults.fail_next(1, 429)
        since = START + timedelta(days=2)
        assert sensor(ingested_since=since.isoformat()).execute({})["count"] == truth(sandbox, since)[0]

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"activity_type": "fax"}, "activity_type='fax'"),
            ({"min_count": 0}, "min_count=0"),
            ({"min_count": "many"}, "min_count='many'"),
            ({"ingested_since": datetime(2026, 11, 1)}, "ingested_since=.* no timezone"),
        ],
    )
    def test_bad_parameters_at_construction(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            sensor(**kwargs)

    @pytest.mark.parametrize("value, message", [("yesterday", "not an ISO-8601"), ("2026-11-01T00:00:00", "no timezone")])
    def test_bad_rendered_since_before_any_call(self, sandbox: Sandbox, value: str, message: str) -> None:
        with pytest.raises(ValueError, match=f"ingested_since=.*{message}"):
            sensor(ingested_since=value).execute({})
        assert sandbox.requests == []


class TestAsyncClientAndTrigger:
    def test_sync_and_async_agree_under_faults(self, sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
        since = START + timedelta(days=1)
        sync_answer = PeopleAIHook().count_ingested(since)

        async def asynchronous() -> Any:
            async with PeopleAIAsyncHook() as hook:
                return await hook.count_ingested(since)

        sandbox.faults.fail_next(2, 429)
        sandbox.faults.fail_next(1, 503)
        sandbox.faults.expire_tokens_after(2)
        with caplog.at_level(logging.DEBUG):
            async_answer = asyncio.run(asynchronous())
        assert async_answer == sync_answer and sync_answer.count > 0
        assert sandbox.stats.get("401", 0) >= 1 and sandbox.stats.get("429", 0) == 2
        for secret in [SECRET, *sandbox.token_uses()]:
            assert secret not in caplog.text

    def test_trigger_success(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=2)
        events = run_trigger(PeopleAINewActivitiesTrigger(ingested_since=since.isoformat(), poke_interval=0.05))
        count, latest = truth(sandbox, since)
        assert events == [{"status": "success", "count": count, "latest_ingested_at": latest}]

    def test_trigger_timeout(self, sandbox: Sandbox) -> None:
        deadline = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        events = run_trigger(
            PeopleAINewActivitiesTrigger(ingested_since=FAR.isoformat(), poke_interval=0.05, deadline=deadline)
        )
        (event,) = events
        assert (event["status"], event["count"], event["latest_ingested_at"]) == ("timeout", 0, None)
        assert "deadline" in event["message"]

    def test_trigger_permanent_error(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json().replace(SECRET, "wrong-one"))
        (event,) = run_trigger(PeopleAINewActivitiesTrigger(ingested_since=START.isoformat()))
        assert event["status"] == "error" and "rejected the credentials" in event["message"]
        assert "wrong-one" not in event["message"]

    def test_serialize_round_trip_without_secrets(self, sandbox: Sandbox) -> None:
        trigger = PeopleAINewActivitiesTrigger(
            ingested_since=START.isoformat(), activity_type="email", min_count=5, poke_interval=30, deadline=FAR.isoformat()
        )
        classpath, kwargs = trigger.serialize()
        module, name = classpath.rsplit(".", 1)
        again = getattr(importlib.import_module(module), name)(**kwargs)
        assert again.serialize() == (classpath, kwargs)
        assert SECRET not in repr(kwargs) and "password" not in repr(kwargs)

    def test_deferrable_sensor_defers_with_trigger(self, sandbox: Sandbox) -> None:
        from airflow.sdk.exceptions import TaskDeferred

        check = sensor(ingested_since=FAR.isoformat(), deferrable=True, timeout=60)
        with pytest.raises(TaskDeferred) as deferred:
            check.execute({})
        trigger = deferred.value.trigger
        assert isinstance(trigger, PeopleAINewActivitiesTrigger) and deferred.value.method_name == "execute_complete"
        sandbox.add_activities(1, timestamp=FAR, created_at=FAR)
        (event,) = run_trigger(trigger)
        assert check.execute_complete({}, event) == {"count": 1, "latest_ingested_at": FAR.isoformat()}
        with pytest.raises(AirflowSensorTimeout):
            check.execute_complete({}, {"status": "timeout", "count": 0})
        with pytest.raises(AirflowFailException, match="boom"):
            check.execute_complete({}, {"status": "error", "message": "boom"})


@pytest.mark.dag
class TestInADag:
    @pytest.mark.parametrize("mode", ["deferrable", "poke"])
    def test_sensor_then_extract(
        self, sandbox: Sandbox, airflow_home: Path, airflow_db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
    ) -> None:
        """The sensor finds the day's data in the sandbox (deferring first in deferrable mode),
        then the extract writes exactly that day; both modes give the same result."""
        from airflow.dag_processing.dagbag import DagBag

        target = airflow_home / "dags" / "sensor_then_extract.py"
        shutil.copyfile(Path(__file__).parent / "dags" / "sensor_then_extract.py", target)
        monkeypatch.setenv("AIRFLOW_VAR_SENSOR_TEST_OUTPUT", tmp_path.as_uri())
        bag = DagBag(dag_folder=str(target))
        assert not bag.import_errors, bag.import_errors
        day = START + timedelta(days=2)
        # two more activities than are ingested after the interval so far: the first check fails,
        # the sensor defers (or pokes again), and the data arrives ~2 s later
        present, _ = truth(sandbox, day)
        monkeypatch.setenv("AIRFLOW_VAR_SENSOR_TEST_MIN_COUNT", str(present + 2))
        since = day.date().isoformat()

        def first_check(record: Any) -> bool:
            return record.query.get("ingested-from") == since and record.query.get("offset") == "0"

        def arrive_after_first_check() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(first_check(r) for r in sandbox.requests):
                time.sleep(0.1)
            time.sleep(0.5)
            sandbox.add_activities(2, timestamp=day - timedelta(hours=3), created_at=day + timedelta(minutes=5))

        arrival = threading.Thread(target=arrive_after_first_check, daemon=True)
        arrival.start()
        run = bag.dags[f"peopleai_sensor_then_extract_{mode}"].test(logical_date=day)
        arrival.join(timeout=60)
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        assert states == {"wait_for_ingestion": "success", "extract_activities": "success"}, states
        scans = [r for r in sandbox.requests if first_check(r)]
        assert len(scans) >= 2  # a failed first check, then the check that found the new data
        import pyarrow.dataset as ds

        table = ds.dataset(tmp_path / "activities", format="parquet", partitioning="hive").to_table()
        expected = {r["uid"] for r in sandbox.expected_activities(day - timedelta(days=1), day)}
        assert set(table.column("uid").to_pylist()) == expected and table.num_rows == len(expected)
