"""The bulk export operator against the sandbox's Raw Activity Data API, writing real Parquet (issue 5).

Each test renders the operator's templates and runs it the way the task runner does. In
deferrable mode :func:`run_deferrable` plays Airflow's part: it catches ``TaskDeferred``,
re-creates the trigger from its serialized form (as the triggerer does), runs it to its event in
an event loop, and resumes the task with the method and keyword arguments the deferral named.
Outputs are compared record by record, nested values included, with the sandbox's ground truth
(:meth:`Sandbox.expected_export_records`). The ``dag.test()`` run of a DAG with both export
types lives in ``test_operators_export_dag.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from airflow_provider_activities.api.errors import PeopleAIError
from airflow_provider_activities.export.spool import RawRecordConverter
from airflow_provider_activities.operators.peopleai import EXPORT_STATE_KEY, PeopleAIExportActivitiesToParquetOperator
from airflow_provider_activities.records.schemas import RAW_ACTIVITY_SCHEMA
from airflow_provider_activities.storage.publish import MANIFEST_NAME, SUCCESS_NAME
from airflow_provider_activities.testing.sandbox import Sandbox
from airflow_provider_activities.triggers.peopleai import PeopleAIExportJobTrigger
from tests.airflow_compat import ExecutorSafeguard, TaskDeferred

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
SECRET = "export-operator-tests-client-secret"
TIME_FIELD = {"snapshot": "timestamp", "delta": "ingest_timestamp"}
DATE_KEY = {"snapshot": "activity_date", "delta": "ingest_date"}
DATASET = {"snapshot": "raw_activities", "delta": "raw_activities_delta"}


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _execute_outside_the_task_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ExecutorSafeguard, "test_mode", True)


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """About 225 activities a day on 2026-11-01 .. 2026-11-04; jobs end after 2 polls."""
    with Sandbox(seed=7, activities=900, start=START, days=4, rate_limit=None, client_secret=SECRET) as sb:
        connect(monkeypatch, sb)
        yield sb


def connect(monkeypatch: pytest.MonkeyPatch, sb: Sandbox, **extra: Any) -> None:
    settings: dict[str, Any] = {"requests_per_second": 10_000, "backoff_base": 0.001, "backoff_max": 0.01}
    settings.update(extra)
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sb.connection_json(**settings))


class StateStore:
    """Airflow's ``task_state_store`` of one task instance, kept across tries (JSON values)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        assert value is not None
        self.values[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def export_op(output_path: str, **kwargs: Any) -> PeopleAIExportActivitiesToParquetOperator:
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("deferrable", False)
    return PeopleAIExportActivitiesToParquetOperator(task_id="export", output_path=output_path, **kwargs)


def context(start: datetime, end: datetime, store: StateStore | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "data_interval_start": start,
        "data_interval_end": end,
        "logical_date": end,
        "run_id": "manual__test",
        "params": {},
    }
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


def run(op: Any, start: datetime = START, end: datetime | None = None, store: StateStore | None = None) -> dict[str, Any]:
    """Render and execute (non-deferrable, or up to the first deferral)."""
    ctx = context(start, end or start + DAY, store)
    op.render_template_fields(ctx)
    return op.execute(ctx)


async def first_event(trigger: PeopleAIExportJobTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger fired no event")


def run_deferrable(
    op: Any, start: datetime = START, end: datetime | None = None, store: StateStore | None = None
) -> tuple[dict[str, Any], int]:
    """Run a deferrable operator to its end as Airflow would; return its result and the number of deferrals."""
    ctx = context(start, end or start + DAY, store)
    op.render_template_fields(ctx)
    step: Any = lambda: op.execute(ctx)  # noqa: E731
    deferrals = 0
    while True:
        try:
            return step(), deferrals
        except TaskDeferred as deferred:
            deferrals += 1
            assert deferred.timeout == op.execution_timeout
            path, kwargs = deferred.trigger.serialize()
            assert path == "airflow_provider_activities.triggers.peopleai.PeopleAIExportJobTrigger"
            json.dumps(kwargs)  # what the triggerer stores
            event = asyncio.run(first_event(PeopleAIExportJobTrigger(**kwargs)))
            method = getattr(op, deferred.method_name)
            resume_kwargs = json.loads(json.dumps(deferred.kwargs or {}))
            step = lambda: method(ctx, event=event, **resume_kwargs)  # noqa: B023, E731


def lake(tmp_path: Path) -> str:
    return f"file://{tmp_path}/lake"


def partition_files(root: Path, dataset: str) -> dict[str, list[Path]]:
    """The Parquet files of each partition directory, by partition name."""
    found: dict[str, list[Path]] = {}
    for directory in sorted((root / dataset).iterdir()):
        if directory.name.startswith("_"):
            continue
        found[directory.name] = sorted(directory.glob("*.parquet"))
    return found


def written_rows(root: Path, dataset: str) -> dict[str, list[dict[str, Any]]]:
    """Each partition's rows as written (file order), nested values as Python objects."""
    return {
        name: [row for path in paths for row in pq.read_table(path).to_pylist()]
        for name, paths in partition_files(root, dataset).items()
    }


def expected_rows(sb: Sandbox, first: date, last: date, export_type: str) -> dict[str, list[dict[str, Any]]]:
    """The sandbox's ground truth for the days, converted to Arrow's Python values, by partition."""
    records = sb.expected_export_records(first, last, export_type)
    rows = RawRecordConverter(RAW_ACTIVITY_SCHEMA).to_batch(records).to_pylist() if records else []
    expected: dict[str, list[dict[str, Any]]] = {}
    day = first
    while day <= last:
        expected[f"{DATE_KEY[export_type]}={day.isoformat()}"] = []
        day += DAY
    for row in rows:
        expected[f"{DATE_KEY[export_type]}={row[TIME_FIELD[export_type]].date().isoformat()}"].append(row)
    return expected


def sha256s(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*.parquet"))
    }


def data_requests(sb: Sandbox) -> list[Any]:
    return [r for r in sb.requests if r.path != "/auth/v1/tokens"]


# -- exact output ------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["polling", "deferrable"])
def test_a_snapshot_of_three_days_writes_exactly_the_sandboxs_records_nested_values_included(
    sandbox: Sandbox, tmp_path: Path, deferrable: bool
) -> None:
    sandbox.export.settings.stale_duplicates = True  # the earlier version of reprocessed activities, after the latest
    sandbox.export.settings.spill_days = 1  # and records of the days around the job's
    op = export_op(lake(tmp_path), export_type="snapshot", deferrable=deferrable)
    if deferrable:
        result, deferrals = run_deferrable(op, START, START + 3 * DAY)
        assert deferrals == 1
    else:
        result = run(op, START, START + 3 * DAY)

    written = written_rows(tmp_path / "lake", "raw_activities")
    expected = expected_rows(sandbox, START.date(), START.date() + 2 * DAY, "snapshot")
    assert list(written) == list(expected) == [f"activity_date=2026-11-0{d}" for d in (1, 2, 3)]
    for partition in expected:
        assert written[partition] == expected[partition], partition
    assert result["rows"] == sum(len(rows) for rows in expected.values()) > 500
    assert result["duplicates_dropped"] > 0 and result["outside_interval_dropped"] > 0
    assert [job.export_type for job in sandbox.export.jobs] == ["snapshot"]
    assert result["jobs"] == [sandbox.export.jobs[0].job_id]

    # Nested values as the vendor's document describes them, checked against the raw records.
    raw = {r["uid"]: r for r in sandbox.expected_export_records(START.date(), START.date() + 2 * DAY, "snapshot")}
    rows = [row for rows in written.values() for row in rows]
    with_campaign = next(row for row in rows if row["campaigns"])
    assert isinstance(with_campaign["campaigns"][0]["start_date"], date)
    assert with_campaign["campaigns"][0]["start_date"].isoformat() == raw[with_campaign["uid"]]["campaigns"][0]["start_date"]
    with_team = next(row for row in rows if any(p["team"] for p in row["participants"] or []))
    source = raw[with_team["uid"]]["participants"]
    assert [p["email"] for p in with_team["participants"]] == [p.get("email") for p in source]
    assert [p["team"] for p in with_team["participants"]] == [
        None if p.get("team") is None else {k: p["team"].get(k) for k in ("crm_id", "team_name", "parent_team_crm_id")}
        for p in source
    ]
    assert all(row["timestamp"].tzinfo is not None for row in rows)
    assert any(row["_extra"] and "account" in json.loads(row["_extra"]) for row in rows)  # unknown fields kept


@pytest.mark.parametrize("deferrable", [False, True], ids=["polling", "deferrable"])
def test_a_delta_of_one_day_writes_the_versions_processed_that_day_once_each(
    sandbox: Sandbox, tmp_path: Path, deferrable: bool
) -> None:
    sandbox.export.settings.timestamp_format = "mixed"  # Z, +00:00 and epoch ms, by record
    sandbox.export.settings.redirect = "other_host"
    day = START + 2 * DAY
    op = export_op(lake(tmp_path), export_type="delta", deferrable=deferrable)
    result = run_deferrable(op, day, day + DAY)[0] if deferrable else run(op, day, day + DAY)

    written = written_rows(tmp_path / "lake", "raw_activities_delta")
    expected = expected_rows(sandbox, day.date(), day.date(), "delta")
    assert list(written) == ["ingest_date=2026-11-03"]
    assert written == expected
    assert result["rows"] == len(expected["ingest_date=2026-11-03"]) > 100
    uids = [row["uid"] for row in written["ingest_date=2026-11-03"]]
    assert len(uids) == len(set(uids))
    # The file came from the other loopback host, without the bearer token.
    requests = sandbox.export.file_requests
    assert requests and all(not f.authorization and f.status == 200 for f in requests)
    assert sandbox.file_host_url != sandbox.base_url


def test_pyarrow_dataset_reads_both_outputs_with_the_nested_schema_and_hive_keys(sandbox: Sandbox, tmp_path: Path) -> None:
    run(export_op(lake(tmp_path), export_type="snapshot"), START, START + 2 * DAY)
    run(export_op(lake(tmp_path), export_type="delta"), START, START + 2 * DAY)
    for export_type in ("snapshot", "delta"):
        dataset = ds.dataset(tmp_path / "lake" / DATASET[export_type], format="parquet", partitioning="hive")
        table = dataset.to_table()
        assert table.schema.field("participants").type == RAW_ACTIVITY_SCHEMA.field("participants").type
        assert table.schema.field("campaigns").type == RAW_ACTIVITY_SCHEMA.field("campaigns").type
        assert table.schema.field("stats").type == RAW_ACTIVITY_SCHEMA.field("stats").type
        assert str(table.schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"
        assert sorted(set(table.column(DATE_KEY[export_type]).to_pylist())) == ["2026-11-01", "2026-11-02"]
        assert table.num_rows == sum(
            len(rows) for rows in expected_rows(sandbox, START.date(), START.date() + DAY, export_type).values()
        )


def test_each_partition_has_its_manifest_and_success_marker_and_a_rerun_is_byte_identical(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    op = export_op(lake(tmp_path), export_type="snapshot")
    first = run(op, START, START + 3 * DAY)
    before = sha256s(tmp_path / "lake")
    second = run(export_op(lake(tmp_path), export_type="snapshot"), START, START + 3 * DAY)
    assert sha256s(tmp_path / "lake") == before
    assert len(sandbox.export.jobs) == 2  # the rerun exported afresh (the first run forgot its job)
    assert {k: v for k, v in first.items() if k != "jobs"} == {k: v for k, v in second.items() if k != "jobs"}
    for partition in partition_files(tmp_path / "lake", "raw_activities"):
        directory = tmp_path / "lake" / "raw_activities" / partition
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
        assert manifest["api"]["export_type"] == "snapshot"
        assert manifest["api"]["jobs"][0]["job_id"] == second["jobs"][0]
        assert (directory / SUCCESS_NAME).read_bytes() == b""
        assert SECRET not in json.dumps(manifest)


def test_a_day_without_records_still_gets_an_empty_partition(sandbox: Sandbox, tmp_path: Path) -> None:
    empty_day = START + 10 * DAY  # after the sandbox's data
    result = run(export_op(lake(tmp_path), export_type="snapshot"), empty_day, empty_day + DAY)
    assert result["rows"] == 0
    files = partition_files(tmp_path / "lake", "raw_activities")
    assert list(files) == ["activity_date=2026-11-11"]
    assert pq.read_table(files["activity_date=2026-11-11"][0]).num_rows == 0


# -- jobs: splitting, limits, failures, retries ------------------------------------------------------


def test_a_400_day_snapshot_is_split_into_two_jobs_within_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_day = START - 399 * DAY
    with Sandbox(seed=11, activities=1200, start=first_day, days=400, rate_limit=None) as sb:
        connect(monkeypatch, sb)
        result = run(export_op(lake(tmp_path), export_type="snapshot"), first_day, START + DAY)
        jobs = sb.export.jobs
        assert [(job.start_date, job.end_date) for job in jobs] == [
            (first_day.date(), first_day.date() + 364 * DAY),
            (first_day.date() + 365 * DAY, START.date()),
        ]
        assert sb.export.peak_active <= 2
        written = written_rows(tmp_path / "lake", "raw_activities")
        expected = expected_rows(sb, first_day.date(), START.date(), "snapshot")
        assert len(written) == 400
        assert written == expected
        assert result["rows"] == sum(len(rows) for rows in expected.values())


def test_a_long_delta_keeps_at_most_two_jobs_unfinished_and_submits_the_next_as_one_ends(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    op = export_op(lake(tmp_path), export_type="delta", max_days_per_job=1, deferrable=True)
    result, deferrals = run_deferrable(op, START, START + 4 * DAY)
    assert len(sandbox.export.jobs) == 4
    assert sandbox.export.peak_active <= 2
    assert deferrals >= 2
    assert written_rows(tmp_path / "lake", "raw_activities_delta") == expected_rows(
        sandbox, START.date(), START.date() + 3 * DAY, "delta"
    )
    assert len(result["jobs"]) == 4


@pytest.mark.parametrize("state", ["Failed", "Canceled"])
@pytest.mark.parametrize("deferrable", [False, True], ids=["polling", "deferrable"])
def test_a_job_that_ends_failed_or_canceled_fails_the_task_naming_it_and_keeps_the_previous_data(
    sandbox: Sandbox, tmp_path: Path, state: str, deferrable: bool
) -> None:
    run(export_op(lake(tmp_path), export_type="snapshot"), START, START + DAY)
    before = sha256s(tmp_path / "lake")
    sandbox.export.fail_next(1, state)
    op = export_op(lake(tmp_path), export_type="snapshot", deferrable=deferrable)
    with pytest.raises(PeopleAIError) as failure:
        if deferrable:
            run_deferrable(op, START, START + DAY)
        else:
            run(op, START, START + DAY)
    job = sandbox.export.jobs[-1]
    assert job.job_id in str(failure.value) and f"ended {state}" in str(failure.value)
    assert sha256s(tmp_path / "lake") == before
    assert not list((tmp_path / "lake" / "raw_activities").glob("_staging/*/*"))


def test_a_retry_reuses_the_job_of_the_earlier_try_and_a_failed_job_is_replaced(sandbox: Sandbox, tmp_path: Path) -> None:
    store = StateStore()
    op = export_op(lake(tmp_path), export_type="delta", deferrable=True)
    with pytest.raises(TaskDeferred):  # the first try defers, then its worker is lost
        run(op, START + DAY, START + 2 * DAY, store=store)
    assert list(store.values) == [EXPORT_STATE_KEY]
    kept = sandbox.export.jobs[0].job_id

    sandbox.reset_log()
    retry = export_op(lake(tmp_path), export_type="delta", deferrable=False)
    result = run(retry, START + DAY, START + 2 * DAY, store=store)
    assert [job.job_id for job in sandbox.export.jobs] == [kept]  # no new job
    assert not [r for r in data_requests(sandbox) if r.method == "POST"]
    assert result["jobs"] == [kept]
    assert store.values == {}  # forgotten on success: clearing the run later exports afresh
    assert written_rows(tmp_path / "lake", "raw_activities_delta") == expected_rows(
        sandbox, START.date() + DAY, START.date() + DAY, "delta"
    )

    # A kept job that failed, or that the API no longer knows, is replaced by a new one.
    for spoil in ("fail", "expire"):
        store = StateStore()
        sandbox.export.settings.polls = 5
        with pytest.raises(TaskDeferred):
            run(export_op(lake(tmp_path), export_type="delta", deferrable=True), START + DAY, START + 2 * DAY, store=store)
        spoiled = sandbox.export.jobs[-1].job_id
        if spoil == "fail":
            sandbox.export.set_state(spoiled, "Failed")
        else:
            sandbox.export.expire(spoiled)
        sandbox.export.settings.polls = 0
        result = run(export_op(lake(tmp_path), export_type="delta"), START + DAY, START + 2 * DAY, store=store)
        assert result["jobs"] != [spoiled] and result["jobs"] == [sandbox.export.jobs[-1].job_id]


def test_too_many_jobs_answers_are_waited_out_not_failed(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    connect(monkeypatch, sandbox, max_retries=1)
    sandbox.export.refuse_next(5)  # more refusals than the client's retries: the operator waits and submits again
    result = run(export_op(lake(tmp_path), export_type="snapshot"), START, START + DAY)
    assert result["rows"] > 0
    assert len(sandbox.export.jobs) == 1
    posts = [r for r in data_requests(sandbox) if r.method == "POST"]
    assert len(posts) == 6


# -- bad input, before any call ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"export_type": "full"}, "export_type='full' is not an export type"),
        ({"activity_type": "sms"}, "activity_type='sms' is not an export activity type"),
        ({"max_days_per_job": 15}, "max_days_per_job=15 must be a whole number of days from 1 to 14"),
        ({"export_type": "snapshot", "max_days_per_job": 0}, "from 1 to 365"),
        ({"poll_interval": -1}, "poll_interval=-1"),
        ({"output_path": "ftp://host/dir"}, "scheme 'ftp' is not supported"),
        ({"output_path": "/no/scheme"}, "has no scheme"),
        ({"partition_by": "interval"}, "partition_by is not a parameter of the export operator"),
    ],
)
def test_bad_arguments_are_refused_when_the_task_is_defined(kwargs: dict[str, Any], message: str) -> None:
    kwargs = {"output_path": "file:///tmp/lake", **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PeopleAIExportActivitiesToParquetOperator(task_id="export", **kwargs)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (START, START, "is empty or inverted"),
        (START + DAY, START, "is empty or inverted"),
        (START + timedelta(hours=6), START + DAY, "not aligned to UTC days"),
        (START, START + timedelta(hours=30), "not aligned to UTC days"),
        ("2026-11-01", START + DAY, "has no timezone"),
    ],
)
def test_bad_intervals_fail_before_any_api_call_or_write(
    sandbox: Sandbox, tmp_path: Path, start: Any, end: Any, message: str
) -> None:
    op = export_op(lake(tmp_path), export_type="snapshot", start=start, end=end)
    with pytest.raises(ValueError, match=message):
        run(op, START, START + DAY)
    assert sandbox.requests == []
    assert not (tmp_path / "lake").exists()


def test_a_path_traversal_in_a_templated_output_path_is_refused_before_any_call(sandbox: Sandbox, tmp_path: Path) -> None:
    op = export_op(f"file://{tmp_path}/lake/{{{{ params.team }}}}", export_type="snapshot")
    ctx = context(START, START + DAY)
    ctx["params"] = {"team": "../../etc"}
    op.render_template_fields(ctx)
    with pytest.raises(ValueError, match=r"'\.' or '\.\.' segment"):
        op.execute(ctx)
    assert sandbox.requests == []


def test_a_missing_connection_is_named_before_any_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", raising=False)
    op = export_op(lake(tmp_path), export_type="snapshot", peopleai_conn_id="no_such_conn")
    with pytest.raises(ValueError, match="peopleai_conn_id='no_such_conn'"):
        run(op, START, START + DAY)
    assert not (tmp_path / "lake").exists()


def test_a_templated_output_path_declares_an_alias_and_the_dataset_follows_the_type() -> None:
    templated = PeopleAIExportActivitiesToParquetOperator(
        task_id="t", output_path="{{ var.value.lake }}", export_type="snapshot"
    )
    assert [outlet.name for outlet in templated.outlets] == ["peopleai-raw_activities"]
    static = PeopleAIExportActivitiesToParquetOperator(
        task_id="s", output_path="s3://bucket/lake", export_type="delta", activity_type="email"
    )
    assert [outlet.uri for outlet in static.outlets] == ["s3://bucket/lake/raw_activities_delta_email"]
    assert os.path.basename(static.outlets[0].uri) == static.dataset


# -- the trigger on its own ------------------------------------------------------------------------


def test_the_trigger_reports_a_job_the_api_no_longer_knows_and_the_task_fails_naming_it(sandbox: Sandbox) -> None:
    from airflow_provider_activities.hooks.peopleai import PeopleAIHook

    job = PeopleAIHook().create_export_job(START.date(), START.date(), "snapshot")
    sandbox.export.expire(job.job_id)
    event = asyncio.run(first_event(PeopleAIExportJobTrigger(job_ids=[job.job_id], poll_interval=0.01)))
    assert event["status"] == "error" and event["error_type"] == "api"
    assert job.job_id in event["message"] and "404" in event["message"]
    with pytest.raises(PeopleAIError, match=job.job_id):
        export_op("file:///tmp/lake", export_type="snapshot").execute_complete({}, event=event)


def test_the_trigger_with_wait_for_any_fires_when_the_first_job_ends(sandbox: Sandbox) -> None:
    from airflow_provider_activities.hooks.peopleai import PeopleAIHook

    hook = PeopleAIHook()
    sandbox.export.settings.polls = 1000
    quick = hook.create_export_job(START.date(), START.date(), "snapshot")
    slow = hook.create_export_job(START.date() + DAY, START.date() + DAY, "snapshot")
    sandbox.export.set_state(quick.job_id, "Completed")
    trigger = PeopleAIExportJobTrigger(job_ids=[quick.job_id, slow.job_id], poll_interval=0.01, wait_for="any", run_state={"k": 1})
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "done" and event["run_state"] == {"k": 1}
    assert [job["state"] for job in event["jobs"]][0] == "Completed"
    assert event["jobs"][1]["state"] in ("Queued", "Running")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"job_ids": "abc"}, "must be a list"), ({"job_ids": ["../x"]}, "not an export job id"), ({"job_ids": [], "wait_for": "some"}, "wait_for")],
)
def test_the_trigger_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PeopleAIExportJobTrigger(**kwargs)
