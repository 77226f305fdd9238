"""PeopleAINewActivitiesSensor against the sandbox over real HTTP: poke mode, deferrable mode
(driving the trigger by hand), and whole DAGs run with ``dag.test()`` in every mode.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_activities.api.errors import PeopleAIAPIError, PeopleAIError
from airflow_provider_activities.compat import AirflowFailException, AirflowSensorTimeout, AirflowSkipException
from airflow_provider_activities.sensors.peopleai import PeopleAINewActivitiesSensor
from airflow_provider_activities.testing.sandbox import Sandbox
from airflow_provider_activities.triggers.peopleai import PeopleAINewActivitiesTrigger
from tests.airflow_compat import dag_test, reschedule_count, xcom_value
from tests.dag_fixtures import airflow_db  # noqa: F401

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
FAR = START + timedelta(days=60)
SECRET = "sensor-test-client-secret-xyz"
FAST = {"page_size": 200, "requests_per_second": 10_000, "backoff_base": 0.01, "backoff_max": 0.05}
DAGS = Path(__file__).parent / "dags"


def connect(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, **extra: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(**{**FAST, **extra}))


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox(seed=4, activities=1200, start=START, days=4, rate_limit=None, client_secret=SECRET) as sb:
        connect(monkeypatch, sb)
        yield sb
        assert sb.errors == []


def truth(sandbox: Sandbox, since: datetime, activity_type: str | None = None) -> dict[str, Any]:
    """The XCom a correct sensor returns: activities whose ``created_at`` is at or after ``since``."""
    found = sandbox.expected_activities(since, FAR + timedelta(days=365), activity_type, by="created_at")
    latest = max((record["created_at"] for record in found), default=None)
    return {
        "count": len(found),
        "latest_ingested_at": datetime.fromtimestamp(latest / 1000, UTC).isoformat() if latest is not None else None,
    }


def sensor(**kwargs: Any) -> PeopleAINewActivitiesSensor:
    kwargs.setdefault("task_id", "wait")
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 5)
    return PeopleAINewActivitiesSensor(**kwargs)


def run_trigger(trigger: PeopleAINewActivitiesTrigger) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        return (await anext(trigger.run())).payload

    return asyncio.run(first())


def scans(sandbox: Sandbox) -> list[Any]:
    return [r for r in sandbox.requests if r.path.startswith("/v0/public/activities") and r.query.get("offset") == "0"]


class TestPokeMode:
    def test_data_present(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=2)
        check = sensor(ingested_since=since.isoformat())
        assert check.execute({}) == truth(sandbox, since) and truth(sandbox, since)["count"] > 0
        assert check.hook._session is None  # closed after the task

    @pytest.mark.parametrize(
        "since",
        [
            pendulum.datetime(2026, 11, 3, 2, tz="Europe/Paris"),
            "2026-11-03T03:00:00+02:00",
            "2026-11-03T01:00:00Z",
            datetime(2026, 11, 3, 1, tzinfo=UTC),
        ],
    )
    def test_any_aware_form_of_since(self, sandbox: Sandbox, since: Any) -> None:
        assert sensor(ingested_since=since).execute({}) == truth(sandbox, datetime(2026, 11, 3, 1, tzinfo=UTC))

    def test_typed(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=3)
        got = sensor(ingested_since=since, activity_type="call").execute({})
        assert got == truth(sandbox, since, "call") and 0 < got["count"] < truth(sandbox, since)["count"]

    def test_absent_times_out(self, sandbox: Sandbox) -> None:
        with pytest.raises(AirflowSensorTimeout, match="Sensor has timed out"):
            sensor(ingested_since=FAR, timeout=0.3).execute({})
        assert len(scans(sandbox)) >= 3  # it poked several times

    def test_absent_with_soft_fail_skips(self, sandbox: Sandbox) -> None:
        with pytest.raises(AirflowSkipException):
            sensor(ingested_since=FAR, timeout=0.3, soft_fail=True).execute({})

    def test_too_few_times_out(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=3)
        with pytest.raises(AirflowSensorTimeout):
            sensor(ingested_since=since, min_count=truth(sandbox, since)["count"] + 1, timeout=0.3).execute({})

    def test_data_arriving_between_pokes(self, sandbox: Sandbox) -> None:
        arrived = FAR + timedelta(hours=1)
        check = sensor(ingested_since=FAR.isoformat(), min_count=3, poke_interval=0.2, timeout=10)
        stop = threading.Event()

        def arrive_after_the_first_poke() -> None:  # not on a fixed timer: a slow first poke would miss it
            while not scans(sandbox) and not stop.wait(0.01):
                pass
            if not stop.is_set():
                sandbox.add_activities(3, timestamp=FAR, created_at=arrived)

        arrival = threading.Thread(target=arrive_after_the_first_poke)
        arrival.start()
        try:
            result = check.execute({})
        finally:
            stop.set()
            arrival.join(timeout=5)
        assert result == {"count": 3, "latest_ingested_at": arrived.isoformat()}
        assert len(scans(sandbox)) >= 2

    def test_transient_errors_are_not_no_data(self, sandbox: Sandbox) -> None:
        sandbox.faults.fail_next(2, 503)
        sandbox.faults.fail_next(1, 429)
        sandbox.faults.drop_connection(1)
        since = START + timedelta(days=2)
        assert sensor(ingested_since=since, timeout=0).execute({}) == truth(sandbox, since)

    def test_bad_credentials_fail_at_once(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(**FAST).replace(SECRET, "nope-wrong"))
        with pytest.raises(AirflowFailException, match="rejected the credentials of connection 'peopleai_default'") as err:
            sensor(ingested_since=START, timeout=60).execute({})
        assert "nope-wrong" not in str(err.value) and len(sandbox.requests) == 1

    def test_other_api_errors_fail_the_try(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        connect(monkeypatch, sandbox, page_size=5000)
        sandbox.max_page_size = 1000
        with pytest.raises(PeopleAIAPIError, match="HTTP 400"):
            sensor(ingested_since=START, timeout=60).execute({})


class TestParameters:
    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"activity_type": "fax"}, "activity_type='fax'"),
            ({"min_count": 0}, "min_count=0"),
            ({"min_count": -3}, "min_count=-3"),
            ({"min_count": "many"}, "min_count='many'"),
            ({"min_count": 2.5}, "min_count=2.5"),
            ({"min_count": True}, "min_count=True"),
            ({"ingested_since": datetime(2026, 11, 1)}, "ingested_since=.* no timezone"),
            ({"ingested_since": "yesterday"}, "ingested_since='yesterday' is not an ISO-8601"),
            ({"ingested_since": "2026-11-01T00:00:00"}, "ingested_since=.* no timezone"),
            ({"ingested_since": 1_793_577_600}, "ingested_since=1793577600 is empty or not a datetime"),
        ],
    )
    def test_bad_parameters_at_construction(self, kwargs: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            sensor(**kwargs)

    def test_templates_are_not_checked_at_construction(self) -> None:
        check = sensor(activity_type="{{ params.kind }}", min_count="{{ params.n }}")
        assert check.ingested_since == "{{ data_interval_end }}"
        assert check.template_fields == ("ingested_since", "activity_type", "min_count", "peopleai_conn_id")

    @pytest.mark.parametrize(
        "rendered, message",
        [
            ({"ingested_since": "yesterday"}, "ingested_since='yesterday' is not an ISO-8601"),
            ({"ingested_since": "2026-11-01 00:00:00"}, "ingested_since=.* no timezone"),
            ({"ingested_since": ""}, "ingested_since='' is empty"),
            ({"activity_type": "fax"}, "activity_type='fax'"),
            ({"min_count": "0"}, "min_count='0'"),
        ],
    )
    def test_bad_rendered_values_fail_before_any_call(self, sandbox: Sandbox, rendered: dict[str, Any], message: str) -> None:
        check = sensor(activity_type="{{ params.kind }}", min_count="{{ params.n }}")
        check.render_template_fields(
            {"data_interval_end": pendulum.datetime(2026, 11, 3, tz="UTC"), "params": {"kind": "email", "n": "2"}}
        )
        assert (check.ingested_since, check.activity_type, check.min_count) == ("2026-11-03 00:00:00+00:00", "email", "2")
        for name, value in rendered.items():
            setattr(check, name, value)
        with pytest.raises(ValueError, match=message):
            check.execute({})
        assert sandbox.requests == []

    def test_rendered_values_are_used(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_OTHER", sandbox.connection_json(**FAST))
        monkeypatch.delenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT")
        check = sensor(activity_type="{{ params.kind }}", min_count="{{ params.n }}", peopleai_conn_id="{{ params.conn }}")
        since = pendulum.datetime(2026, 11, 3, tz="UTC")
        check.render_template_fields(
            {"data_interval_end": since, "params": {"kind": "email", "n": "2", "conn": "peopleai_other"}}
        )
        assert check.execute({}) == truth(sandbox, since, "email")


class TestDeferrableMode:
    def test_returns_at_once_when_the_data_is_there(self, sandbox: Sandbox) -> None:
        since = START + timedelta(days=2)
        assert sensor(ingested_since=since, deferrable=True).execute({}) == truth(sandbox, since)

    def test_defers_then_completes_with_the_trigger_event(self, sandbox: Sandbox) -> None:
        from tests.airflow_compat import TaskDeferred

        check = sensor(ingested_since=FAR.isoformat(), activity_type="meeting", deferrable=True, timeout=60, poke_interval=0.1)
        before = datetime.now(UTC)
        with pytest.raises(TaskDeferred) as deferred:
            check.execute({})
        assert deferred.value.method_name == "execute_complete"
        trigger = deferred.value.trigger
        assert isinstance(trigger, PeopleAINewActivitiesTrigger)
        _, kwargs = trigger.serialize()
        deadline = datetime.fromisoformat(kwargs.pop("deadline"))
        assert before + timedelta(seconds=60) <= deadline <= datetime.now(UTC) + timedelta(seconds=60)
        assert kwargs == {
            "ingested_since": FAR.isoformat(),
            "activity_type": "meeting",
            "min_count": 1,
            "peopleai_conn_id": "peopleai_default",
            "poke_interval": 0.1,
            "exponential_backoff": False,
            "max_wait": None,
        }
        assert SECRET not in json.dumps(kwargs)
        sandbox.add_activities(1, timestamp=FAR, created_at=FAR, activity_type="meeting")
        event = run_trigger(trigger)
        assert check.execute_complete({}, event) == {"count": 1, "latest_ingested_at": FAR.isoformat()}

    def test_timeout_event(self, sandbox: Sandbox) -> None:
        from tests.airflow_compat import TaskDeferred

        check = sensor(ingested_since=FAR, deferrable=True, timeout=0.3)
        with pytest.raises(TaskDeferred) as deferred:
            check.execute({})
        event = run_trigger(deferred.value.trigger)
        assert event["status"] == "timeout"
        with pytest.raises(AirflowSensorTimeout, match="Sensor has timed out after 0.3 s: 0 of 1 activities"):
            check.resume_execution("execute_complete", {"event": event}, {})
        soft = sensor(ingested_since=FAR, deferrable=True, timeout=0.3, soft_fail=True)
        with pytest.raises(AirflowSkipException):
            soft.resume_execution("execute_complete", {"event": event}, {})

    def test_error_events(self) -> None:
        check = sensor(ingested_since=START, deferrable=True)
        with pytest.raises(AirflowFailException, match="People.ai sensor failed: rejected"):
            check.execute_complete({}, {"status": "error", "error_type": "auth", "message": "rejected"})
        with pytest.raises(PeopleAIError, match="HTTP 400") as api_error:
            check.execute_complete({}, {"status": "error", "error_type": "api", "message": "HTTP 400"})
        assert not isinstance(api_error.value, AirflowFailException)  # task retries apply
        with pytest.raises(PeopleAIError, match="unexpected trigger event"):
            check.execute_complete({}, {"what": "?"})

    def test_bad_credentials_fail_before_deferring(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(**FAST).replace(SECRET, "nope-wrong"))
        with pytest.raises(AirflowFailException, match="rejected the credentials"):
            sensor(ingested_since=FAR, deferrable=True).execute({})
        with pytest.raises(AirflowSkipException):  # as in Airflow's sensors: soft_fail skips an AirflowFailException
            sensor(ingested_since=FAR, deferrable=True, soft_fail=True).execute({})

    def test_backoff_and_max_wait_reach_the_trigger(self, sandbox: Sandbox) -> None:
        from tests.airflow_compat import TaskDeferred

        with pytest.raises(TaskDeferred) as deferred:
            sensor(ingested_since=FAR, deferrable=True, exponential_backoff=True, max_wait=timedelta(minutes=5)).execute({})
        _, kwargs = deferred.value.trigger.serialize()
        assert kwargs["exponential_backoff"] is True and kwargs["max_wait"] == 300.0


# -- whole DAGs -------------------------------------------------------------------------------


def load_dag(airflow_home: Path, dag_id: str) -> Any:
    """A DAG of ``tests/dags/sensor_gate.py``, copied into the configured dags folder and loaded from there."""
    from tests.airflow_compat import DagBag

    target = airflow_home / "dags" / "sensor_gate.py"
    shutil.copyfile(DAGS / "sensor_gate.py", target)
    bag = DagBag(dag_folder=str(target))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def return_value(run: Any, task_id: str) -> Any:
    """A task's XCom ``return_value`` after ``dag.test()``, from the metadata database."""
    return xcom_value(run, task_id)


def reschedules(ti: Any) -> int:
    """How many times a task instance was rescheduled (``mode="reschedule"``)."""
    return reschedule_count(ti)


@pytest.fixture
def trigger_events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The events the new-activities trigger fired in this process (``dag.test()`` runs it inline)."""
    events: list[dict[str, Any]] = []
    original = PeopleAINewActivitiesTrigger.run

    async def recording_run(self: PeopleAINewActivitiesTrigger) -> Any:
        async for event in original(self):
            events.append(event.payload)
            yield event

    monkeypatch.setattr(PeopleAINewActivitiesTrigger, "run", recording_run)
    return events


@pytest.mark.dag
class TestInADag:
    DAY = datetime(2026, 11, 3, tzinfo=UTC)  # the run's data_interval_end: [11-02, 11-03) is the interval

    @pytest.mark.parametrize("mode", ["deferrable", "poke", "reschedule"])
    def test_gate_opens_when_the_data_arrives(
        self,
        sandbox: Sandbox,
        airflow_home: Path,
        airflow_db: Path,
        monkeypatch: pytest.MonkeyPatch,
        trigger_events: list[dict[str, Any]],
        mode: str,
    ) -> None:
        """The first check finds one activity too few; two more arrive; the sensor (after
        deferring, poking again or being rescheduled) succeeds, and the downstream task gets its
        XCom. Every mode gives the same result.
        """
        dag = load_dag(airflow_home, f"peopleai_sensor_gate_{mode}")
        present = truth(sandbox, self.DAY)["count"]
        monkeypatch.setenv("AIRFLOW_VAR_SENSOR_TEST_MIN_COUNT", str(present + 2))
        arrived = self.DAY + timedelta(hours=2)

        def arrive_after_the_first_check() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not scans(sandbox):
                time.sleep(0.05)
            time.sleep(0.3)
            sandbox.add_activities(2, timestamp=self.DAY - timedelta(hours=1), created_at=arrived)

        arrival = threading.Thread(target=arrive_after_the_first_check, daemon=True)
        arrival.start()
        run = dag_test(dag, self.DAY)
        arrival.join(timeout=60)

        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        assert states == {"wait_for_ingestion": "success", "use_new_activities": "success"}, states
        assert run.data_interval_end == self.DAY
        expected = truth(sandbox, self.DAY)
        assert expected["count"] == present + 2
        assert return_value(run, "wait_for_ingestion") == expected
        assert return_value(run, "use_new_activities") == {"sensor_said": expected}
        checks = scans(sandbox)
        assert len(checks) >= 2 and all(r.query.get("ingested-from") == "2026-11-03" for r in checks)
        if mode == "deferrable":
            assert trigger_events == [{"status": "success", **expected}]  # it deferred; the trigger found the data
        else:
            assert trigger_events == []
        sensor_ti = next(ti for ti in run.get_task_instances() if ti.task_id == "wait_for_ingestion")
        assert (reschedules(sensor_ti) > 0) == (mode == "reschedule")

    def test_deferrable_timeout_with_soft_fail_skips_the_gate(
        self,
        sandbox: Sandbox,
        airflow_home: Path,
        airflow_db: Path,
        monkeypatch: pytest.MonkeyPatch,
        trigger_events: list[dict[str, Any]],
    ) -> None:
        dag = load_dag(airflow_home, "peopleai_sensor_gate_soft_timeout")
        monkeypatch.setenv("AIRFLOW_VAR_SENSOR_TEST_MIN_COUNT", str(truth(sandbox, self.DAY)["count"] + 1))
        run = dag_test(dag, self.DAY)
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        assert states == {"wait_for_ingestion": "skipped", "use_new_activities": "skipped"}, states
        assert [event["status"] for event in trigger_events] == ["timeout"]

    def test_sensor_then_extract(
        self,
        sandbox: Sandbox,
        airflow_home: Path,
        airflow_db: Path,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        """The deferrable sensor gates the real activities extract, which then writes exactly the day."""
        import pyarrow.dataset as ds

        from tests.airflow_compat import DagBag

        target = airflow_home / "dags" / "sensor_then_extract.py"
        shutil.copyfile(DAGS / "sensor_then_extract.py", target)
        bag = DagBag(dag_folder=str(target))
        assert not bag.import_errors, bag.import_errors
        monkeypatch.setenv("AIRFLOW_VAR_SENSOR_TEST_OUTPUT", tmp_path.as_uri())
        monkeypatch.setenv("AIRFLOW_VAR_SENSOR_TEST_MIN_COUNT", str(truth(sandbox, self.DAY)["count"]))
        run = dag_test(bag.dags["peopleai_sensor_then_extract_deferrable"], self.DAY)
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        assert states == {"wait_for_ingestion": "success", "extract_activities": "success"}, states
        table = ds.dataset(tmp_path / "activities", format="parquet", partitioning="hive").to_table()
        expected = {r["uid"] for r in sandbox.expected_activities(self.DAY - timedelta(days=1), self.DAY)}
        assert set(table.column("uid").to_pylist()) == expected and table.num_rows == len(expected)
