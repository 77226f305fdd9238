"""The extract operators against the sandbox over HTTP, writing real Parquet on file:// (issue 3).

Every test runs the operator's ``execute`` after rendering its templates, the way the task runner
does, against a :class:`~airflow_provider_activities.testing.sandbox.Sandbox` on loopback, and
reads the output back with ``pyarrow.dataset`` (hive partitioning). The same checks on moto's
S3 server live in ``test_operators_s3.py``; whole DAG runs in ``test_operators_dag.py``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import airflow_provider_activities.hooks._streams as streams_module
import airflow_provider_activities.hooks.peopleai as hook_module
import airflow_provider_activities.operators._run as operator_module
import airflow_provider_activities.storage.writer as parquet_module
from airflow_provider_activities.api.errors import PeopleAIAPIError
from airflow_provider_activities.api.protocol import Page
from airflow_provider_activities.compat import AIRFLOW_V_3_0_PLUS, Asset, AssetAlias, ObjectStoragePath
from airflow_provider_activities.operators.peopleai import (
    PeopleAIActivitiesToParquetOperator,
    PeopleAIParticipantsToParquetOperator,
)
from airflow_provider_activities.records.schemas import (
    ACTIVITY_SCHEMA,
    EXTRA_FIELD,
    PARTICIPANT_SCHEMA,
    file_schema,
    schema_fingerprint,
)
from airflow_provider_activities.storage.publish import MANIFEST_NAME, STAGING_DIR, SUCCESS_NAME, discard_staging
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.airflow_compat import ExecutorSafeguard, OutletEventAccessors
from tests.test_publish import FailingOperations, InjectedFailure, contents

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NOV_2 = START + DAY  # a Monday: busy (2026-11-01 is a Sunday, with few activities)
TYPES = ("call", "email", "meeting")
SECRET = "operator-tests-client-secret"
TOKEN_PATH = "/auth/v1/tokens"
ACTIVITY_FILE_SCHEMA = file_schema(ACTIVITY_SCHEMA, ["activity_type"])
PARTICIPANT_FILE_SCHEMA = file_schema(PARTICIPANT_SCHEMA, [])
Operator = Callable[..., Any]


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _execute_outside_the_task_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """``execute`` is called directly here; Airflow only warns about that outside its test mode."""
    monkeypatch.setattr(ExecutorSafeguard, "test_mode", True)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """About 225 activities (and 800 participants) a day on 2026-11-01 .. 2026-11-04."""
    with Sandbox(seed=7, activities=900, start=START, days=4, rate_limit=None, client_secret=SECRET) as sb:
        yield sb


def connect(monkeypatch: pytest.MonkeyPatch, sb: Sandbox, conn_id: str = "peopleai_default", **extra: Any) -> None:
    """Point the ``peopleai`` connection ``conn_id`` at ``sb``: pages of 100, no pacing, fast backoff."""
    settings: dict[str, Any] = {"page_size": 100, "requests_per_second": 10_000, "backoff_base": 0.001, "backoff_max": 0.01}
    settings.update(extra)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", sb.connection_json(**settings))


@pytest.fixture
def api(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The sandbox, with ``peopleai_default`` pointing at it."""
    connect(monkeypatch, sandbox)
    return sandbox


def run(
    op: Any,
    start: datetime = START,
    end: datetime | None = None,
    outlet_events: OutletEventAccessors | None = None,
    run_id: str = "manual__test",
    **context: Any,
) -> dict[str, Any]:
    """Render the operator's templates for the data interval ``[start, end)`` and execute it."""
    ctx: dict[str, Any] = {
        "data_interval_start": start,
        "data_interval_end": end if end is not None else start + DAY,
        "logical_date": end if end is not None else start + DAY,
        "run_id": run_id,
        "params": {},
        **context,
    }
    if outlet_events is not None:
        ctx["outlet_events"] = outlet_events
    op.render_template_fields(ctx)
    return op.execute(ctx)


def lake(tmp_path: Any, name: str = "lake") -> str:
    return f"file://{tmp_path}/{name}"


def activities_op(output_path: str, **kwargs: Any) -> PeopleAIActivitiesToParquetOperator:
    return PeopleAIActivitiesToParquetOperator(task_id="extract_activities", output_path=output_path, **kwargs)


def participants_op(output_path: str, **kwargs: Any) -> PeopleAIParticipantsToParquetOperator:
    return PeopleAIParticipantsToParquetOperator(task_id="extract_participants", output_path=output_path, **kwargs)


def root_of(output_path: str, conn_id: str | None = None) -> ObjectStoragePath:
    return ObjectStoragePath(output_path, conn_id=conn_id)


def days(first: datetime, count: int) -> list[datetime]:
    return [first + i * DAY for i in range(count)]


def read_dataset(root: ObjectStoragePath, dataset: str, keys: tuple[str, ...] | None = None) -> ds.Dataset:
    """``{root}/{dataset}`` as one pyarrow dataset, partition keys from the directory names (hive)."""
    if keys is None:
        keys = ("activity_type", "activity_date") if dataset == "activities" else ("activity_date",)
    partitioning = ds.partitioning(pa.schema([(key, pa.string()) for key in keys]), flavor="hive")
    root.fs.invalidate_cache()
    return ds.dataset(f"{root.path.rstrip('/')}/{dataset}", format="parquet", partitioning=partitioning, filesystem=root.fs)


def activity_uids_by_partition(table: pa.Table) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for kind, day, uid in zip(*(table.column(name).to_pylist() for name in ("activity_type", "activity_date", "uid"))):
        found.setdefault((kind, day), []).append(uid)
    return {key: sorted(values) for key, values in found.items()}


def expected_activity_uids(sb: Sandbox, first: datetime, count: int, types: tuple[str, ...] = TYPES) -> dict[tuple[str, str], list[str]]:
    expected = {}
    for day in days(first, count):
        for kind in types:
            uids = sorted(record["uid"] for record in sb.expected_activities(day, day + DAY, kind))
            if uids:
                expected[(kind, day.date().isoformat())] = uids
    return expected


def participant_key(record: dict[str, Any]) -> tuple[str, Any, Any]:
    return (record["activity_uid"], record["id"], record["email"])


def participant_keys_by_day(table: pa.Table) -> dict[str, list[tuple[str, Any, Any]]]:
    found: dict[str, list[tuple[str, Any, Any]]] = {}
    for record in table.select(["activity_date", "activity_uid", "id", "email"]).to_pylist():
        found.setdefault(record["activity_date"], []).append(participant_key(record))
    return {day: sorted(keys, key=repr) for day, keys in found.items()}


def expected_participant_keys(sb: Sandbox, first: datetime, count: int) -> dict[str, list[tuple[str, Any, Any]]]:
    expected = {}
    for day in days(first, count):
        keys = sorted((participant_key(r) for r in sb.expected_participants(day, day + DAY)), key=repr)
        if keys:
            expected[day.date().isoformat()] = keys
    return expected


def no_duplicates(values: list[Any]) -> bool:
    return len(values) == len(set(values))


def sha256s(listing: dict[str, bytes]) -> dict[str, str]:
    return {path: hashlib.sha256(data).hexdigest() for path, data in listing.items()}


def manifests(listing: dict[str, bytes], dataset: str) -> dict[str, dict[str, Any]]:
    """Each partition's ``_manifest.json``, by relative partition path."""
    prefix, suffix = f"{dataset}/", f"/{MANIFEST_NAME}"
    return {
        path[len(prefix) : -len(suffix)]: json.loads(data)
        for path, data in listing.items()
        if path.startswith(prefix) and path.endswith(suffix)
    }


def without_run_details(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest without what may differ between runs over the same data."""
    return {key: value for key, value in manifest.items() if key not in ("finished_at", "run_id")}


def data_requests(sb: Sandbox) -> list[Any]:
    return [r for r in sb.requests if r.path != TOKEN_PATH]


def assert_complete_partitions(listing: dict[str, bytes], dataset: str, owned: list[str]) -> None:
    """Each owned partition holds exactly its manifest's files, ``_manifest.json`` and an empty ``_SUCCESS``."""
    found = manifests(listing, dataset)
    assert sorted(owned) == sorted(found)
    for partition, manifest in found.items():
        directory = f"{dataset}/{partition}/"
        names = [info["name"] for info in manifest["files"]]
        assert sorted(p[len(directory) :] for p in listing if p.startswith(directory)) == sorted(
            names + [MANIFEST_NAME, SUCCESS_NAME]
        )
        assert listing[directory + SUCCESS_NAME] == b""
        assert [len(listing[directory + name]) for name in names] == [info["bytes"] for info in manifest["files"]]
        assert sum(info["rows"] for info in manifest["files"]) == manifest["rows"]
    assert not [path for path in listing if f"{STAGING_DIR}/" in path], "staging left behind"


def activity_partitions(first: datetime, count: int, types: tuple[str, ...] = TYPES) -> list[str]:
    return [f"activity_type={kind}/activity_date={day.date().isoformat()}" for kind in types for day in days(first, count)]


def participant_partitions(first: datetime, count: int) -> list[str]:
    return [f"activity_date={day.date().isoformat()}" for day in days(first, count)]


# -- exact output ------------------------------------------------------------------------------


def test_activities_land_exactly_in_their_type_and_day_partitions(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    summary = run(activities_op(output), START, START + 3 * DAY)

    root = root_of(output)
    table = read_dataset(root, "activities").to_table()
    by_partition = activity_uids_by_partition(table)
    assert by_partition == expected_activity_uids(api, START, 3)
    assert no_duplicates(table.column("uid").to_pylist())
    assert len(by_partition) == 9  # three types on each of three days, none empty in this data

    listing = contents(root)
    assert_complete_partitions(listing, "activities", activity_partitions(START, 3))
    found = manifests(listing, "activities")
    for partition, manifest in found.items():
        kind, day = (segment.split("=")[1] for segment in partition.split("/"))
        assert manifest["rows"] == len(by_partition[(kind, day)])
        assert manifest["interval"] == {"start": START.isoformat(), "end": (START + 3 * DAY).isoformat()}
        assert manifest["api"]["endpoint"] == "/v0/public/activities"
        assert manifest["api"]["filters"]
        assert manifest["dataset"] == "activities" and manifest["run_id"] == "manual__test"
        assert manifest["task_id"] == "extract_activities" and manifest["provider_version"]
        assert manifest["duplicates_dropped"] == 0 and manifest["finished_at"]
    assert summary["rows"] == table.num_rows == sum(m["rows"] for m in found.values())


def test_one_activity_type_writes_and_asks_only_for_that_type(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    summary = run(activities_op(output, activity_type="call"), START, START + 2 * DAY)

    table = read_dataset(root_of(output), "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(api, START, 2, types=("call",))
    assert {r.path for r in data_requests(api)} == {"/v0/public/activities/call"}
    assert [p["partition"] for p in summary["partitions"]] == activity_partitions(START, 2, types=("call",))
    assert_complete_partitions(contents(root_of(output)), "activities", activity_partitions(START, 2, types=("call",)))


def test_participants_land_exactly_in_their_day_partitions(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    summary = run(participants_op(output), START + DAY, START + 3 * DAY)

    root = root_of(output)
    table = read_dataset(root, "participants").to_table()
    by_day = participant_keys_by_day(table)
    assert by_day == expected_participant_keys(api, START + DAY, 2)
    keys = [participant_key(r) for r in table.select(["activity_uid", "id", "email"]).to_pylist()]
    assert no_duplicates(keys)
    assert_complete_partitions(contents(root), "participants", participant_partitions(START + DAY, 2))
    assert summary["rows"] == table.num_rows
    assert {r.path for r in data_requests(api)} == {"/v0/public/activities/participants"}


def test_records_on_the_bounds_land_in_the_right_day(api: Sandbox, tmp_path: Any) -> None:
    at_midnight = api.add_activities(1, timestamp=NOV_2, activity_type="call")[0]["uid"]
    just_before = api.add_activities(1, timestamp=NOV_2 - timedelta(milliseconds=1), activity_type="call")[0]["uid"]
    output = lake(tmp_path)
    run(activities_op(output, activity_type="call"), START)  # [11-01, 11-02)
    run(activities_op(output, activity_type="call"), NOV_2)  # [11-02, 11-03)
    found = activity_uids_by_partition(read_dataset(root_of(output), "activities").to_table())
    assert just_before in found[("call", "2026-11-01")] and just_before not in found[("call", "2026-11-02")]
    assert at_midnight in found[("call", "2026-11-02")] and at_midnight not in found[("call", "2026-11-01")]
    assert found == expected_activity_uids(api, START, 2, types=("call",))


def test_the_output_reads_as_one_dataset_with_the_documented_schema(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    run(activities_op(output), START, START + 2 * DAY)
    run(participants_op(output), START, START + 2 * DAY)
    root = root_of(output)

    for dataset, record_schema, files_schema in (
        ("activities", ACTIVITY_SCHEMA, ACTIVITY_FILE_SCHEMA),
        ("participants", PARTICIPANT_SCHEMA, PARTICIPANT_FILE_SCHEMA),
    ):
        found = read_dataset(root, dataset)
        physical = [fragment.physical_schema for fragment in found.get_fragments()]
        assert len(physical) == (6 if dataset == "activities" else 2)
        for schema in physical:  # the same schema, field metadata included, in every file
            assert schema.equals(files_schema, check_metadata=False)
            assert schema_fingerprint(schema) == schema_fingerprint(files_schema)
            assert [f.metadata for f in schema] == [f.metadata for f in files_schema]
        assert "activity_type" not in physical[0].names  # a partition column lives in the path only
        pa.unify_schemas(physical)
        table = found.to_table()
        for field in record_schema:  # every documented column, with its type (partition keys from the path)
            assert table.schema.field(field.name).type == field.type, field.name
        assert set(table.column_names) == set(record_schema.names) | {"activity_date"}
        fingerprints = {m["schema_fingerprint"] for m in manifests(contents(root), dataset).values()}
        assert fingerprints == {schema_fingerprint(files_schema)}


# -- idempotence -------------------------------------------------------------------------------


def test_a_rerun_gives_byte_identical_files_and_leaves_nothing_else(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    root = root_of(output)
    run(activities_op(output), START, START + 2 * DAY, run_id="run_1")
    run(participants_op(output), START, START + 2 * DAY, run_id="run_1")
    first = contents(root)

    run(activities_op(output), START, START + 2 * DAY, run_id="run_2")
    run(participants_op(output), START, START + 2 * DAY, run_id="run_2")
    second = contents(root)

    assert sorted(first) == sorted(second)  # the same files, nothing left over, no staging
    data_files = [path for path in first if path.endswith(".parquet")]
    assert len(data_files) == 8
    assert {p: h for p, h in sha256s(first).items() if p in data_files} == {
        p: h for p, h in sha256s(second).items() if p in data_files
    }
    for dataset in ("activities", "participants"):
        before, after = manifests(first, dataset), manifests(second, dataset)
        assert {p: without_run_details(m) for p, m in before.items()} == {p: without_run_details(m) for p, m in after.items()}
        assert {m["run_id"] for m in after.values()} == {"run_2"}
    assert not [path for path in second if STAGING_DIR in path]
    assert not (tmp_path / "lake" / "activities" / STAGING_DIR).exists()


def test_a_rerun_replaces_the_partition_whole_and_leaves_other_days_alone(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    root = root_of(output)
    run(activities_op(output, max_rows_per_file=10), START, START + 3 * DAY)  # many small files
    before = contents(root)
    assert len([p for p in before if "activity_date=2026-11-02" in p and p.endswith(".parquet")]) > 6

    added = api.add_activities(4, timestamp=START + DAY + timedelta(hours=9), activity_type="email")
    run(activities_op(output), START + DAY, START + 2 * DAY)  # one file per partition now
    after = contents(root)

    middle = [p for p in after if "activity_date=2026-11-02" in p]
    assert sorted(middle) == sorted(
        f"activities/activity_type={kind}/activity_date=2026-11-02/{name}"
        for kind in TYPES
        for name in ("part-00000.parquet", MANIFEST_NAME, SUCCESS_NAME)
    )
    untouched = {p: data for p, data in before.items() if "activity_date=2026-11-02" not in p}
    assert {p: data for p, data in after.items() if "activity_date=2026-11-02" not in p} == untouched
    table = read_dataset(root, "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(api, START, 3)
    assert {a["uid"] for a in added} <= set(table.column("uid").to_pylist())


def test_a_day_without_data_gets_a_zero_row_file_with_the_schema_and_a_manifest(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    quiet = START + 10 * DAY  # the sandbox's data ends on 2026-11-05
    assert api.activity_count(quiet, quiet + DAY) == 0
    summary = run(activities_op(output), quiet)
    participants = run(participants_op(output), quiet)

    assert summary["rows"] == 0 and participants["rows"] == 0
    root = root_of(output)
    listing = contents(root)
    assert_complete_partitions(listing, "activities", activity_partitions(quiet, 1))
    assert_complete_partitions(listing, "participants", participant_partitions(quiet, 1))
    for dataset, files_schema in (("activities", ACTIVITY_FILE_SCHEMA), ("participants", PARTICIPANT_FILE_SCHEMA)):
        for partition, manifest in manifests(listing, dataset).items():
            assert manifest["rows"] == 0 and [f["rows"] for f in manifest["files"]] == [0]
            data = pq.read_table(f"{tmp_path}/lake/{dataset}/{partition}/part-00000.parquet")
            assert data.num_rows == 0 and data.schema.equals(files_schema)
        found = read_dataset(root, dataset)
        assert found.to_table().num_rows == 0
        assert found.schema.field("uid" if dataset == "activities" else "activity_uid").type == pa.string()
    assert [p["rows"] for p in summary["partitions"]] == [0, 0, 0]


# -- an unreliable API -------------------------------------------------------------------------


def test_ignored_filters_repeated_records_and_retries_change_nothing_in_the_output(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    connect(monkeypatch, sandbox)
    clean = lake(tmp_path, "clean")
    run(activities_op(clean), START, START + 2 * DAY)
    run(participants_op(clean), START, START + 2 * DAY)

    sandbox.reset_log()
    sandbox.faults.ignore_filters()  # every page holds the whole data set (4 days)
    sandbox.faults.overlap_pages()  # the second page repeats the last record of the first (on 2026-11-01)
    sandbox.faults.fail_next(3, status=503)
    sandbox.faults.fail_next(2, status=429)
    faulty = lake(tmp_path, "faulty")
    summary = run(activities_op(faulty), START, START + 2 * DAY)
    participants = run(participants_op(faulty), START, START + 2 * DAY)

    assert sandbox.stats.get("503", 0) == 3 and sandbox.stats.get("429", 0) == 2
    assert summary["duplicates_dropped"] > 0 and summary["outside_interval_dropped"] > 0
    assert participants["duplicates_dropped"] > 0 and participants["outside_interval_dropped"] > 0
    clean_files = {p: h for p, h in sha256s(contents(root_of(clean))).items() if p.endswith(".parquet")}
    faulty_files = {p: h for p, h in sha256s(contents(root_of(faulty))).items() if p.endswith(".parquet")}
    assert faulty_files == clean_files  # the same rows, in the same order, byte for byte
    table = read_dataset(root_of(faulty), "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(sandbox, START, 2)
    assert participant_keys_by_day(read_dataset(root_of(faulty), "participants").to_table()) == expected_participant_keys(
        sandbox, START, 2
    )
    for manifest in manifests(contents(root_of(faulty)), "activities").values():
        assert manifest["duplicates_dropped"] == summary["duplicates_dropped"]
        assert manifest["outside_interval_dropped"] == summary["outside_interval_dropped"]


def test_iso_and_mixed_timestamps_give_the_same_files_as_epoch_milliseconds(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    connect(monkeypatch, sandbox)
    run(activities_op(lake(tmp_path, "epoch")), START)
    run(participants_op(lake(tmp_path, "epoch")), START)
    sandbox.timestamp_format = "mixed"
    run(activities_op(lake(tmp_path, "mixed")), START)
    run(participants_op(lake(tmp_path, "mixed")), START)
    epoch = {p: h for p, h in sha256s(contents(root_of(lake(tmp_path, "epoch")))).items() if p.endswith(".parquet")}
    mixed = {p: h for p, h in sha256s(contents(root_of(lake(tmp_path, "mixed")))).items() if p.endswith(".parquet")}
    assert mixed == epoch and len(epoch) == 4


def _patch_pages(monkeypatch: pytest.MonkeyPatch, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Change every page the hook parses (the sandbox has no knob for this). The pages are
    parsed in Python (``parse_page``), since ``change`` works on the records as dicts.
    """
    fetch = hook_module.PeopleAIHook._fetch_page

    def fetch_changed(self: Any, path: str, filters: dict[str, str], offset: int, parse: Any = None) -> Page:
        page = fetch(self, path, filters, offset, hook_module.parse_page)
        return Page(records=change(page.records), total=page.total)

    monkeypatch.setattr(hook_module.PeopleAIHook, "_fetch_page", fetch_changed)


def test_records_out_of_time_order_still_land_in_their_partitions(api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    _patch_pages(monkeypatch, lambda records: list(reversed(records)))
    output = lake(tmp_path)
    run(activities_op(output, activity_type="email"), START, START + 3 * DAY)
    table = read_dataset(root_of(output), "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(api, START, 3, types=("email",))


def test_fields_the_schema_does_not_know_are_kept_in_extra_and_logged_once(
    api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    chosen = {r["uid"] for r in api.expected_activities(NOV_2, NOV_2 + DAY)[::50]}
    assert len(chosen) >= 3

    def add_fields(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            if record.get("uid") in chosen:
                record["sentiment_score"] = 0.75
                record["vendor_tags"] = {"b": [1, 2], "a": "x"}
        return records

    _patch_pages(monkeypatch, add_fields)
    output = lake(tmp_path)
    op = activities_op(output)
    warnings: list[tuple[Any, ...]] = []
    monkeypatch.setattr(type(op), "log", property(lambda self: _Recorder(warnings)))
    run(op, NOV_2)

    table = read_dataset(root_of(output), "activities").to_table()
    extra = dict(zip(table.column("uid").to_pylist(), table.column(EXTRA_FIELD).to_pylist()))
    assert {uid for uid, value in extra.items() if value is not None} == chosen
    for uid in chosen:
        assert json.loads(extra[uid]) == {"sentiment_score": 0.75, "vendor_tags": {"a": "x", "b": [1, 2]}}
        assert extra[uid] == '{"sentiment_score":0.75,"vendor_tags":{"a":"x","b":[1,2]}}'
    drift = [w for w in warnings if "sentiment_score" in " ".join(map(str, w))]
    assert len(drift) == 1 and "vendor_tags" in " ".join(map(str, drift[0]))
    fingerprints = {m["schema_fingerprint"] for m in manifests(contents(root_of(output)), "activities").values()}
    assert fingerprints == {schema_fingerprint(ACTIVITY_FILE_SCHEMA)}  # drift never changes the schema


class _Recorder:
    """Stands in for an operator's logger; keeps the warnings."""

    def __init__(self, warnings: list[tuple[Any, ...]]) -> None:
        self.warnings = warnings

    def warning(self, *args: Any, **kwargs: Any) -> None:
        self.warnings.append(args)

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def test_an_unknown_activity_type_goes_to_other_keeps_its_type_and_a_rerun_replaces_it(
    api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    odd = {r["uid"] for r in api.expected_activities(NOV_2, NOV_2 + DAY, "email")[:3]}

    def retype(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            if record.get("uid") in odd:
                record["activity_type"] = "sms"
        return records

    output = lake(tmp_path)
    root = root_of(output)
    warnings: list[tuple[Any, ...]] = []
    with monkeypatch.context() as patch:
        _patch_pages(patch, retype)
        op = activities_op(output)
        patch.setattr(type(op), "log", property(lambda self: _Recorder(warnings)))
        summary = run(op, NOV_2)
    other = "activity_type=other/activity_date=2026-11-02"
    assert other in [p["partition"] for p in summary["partitions"]]
    table = read_dataset(root, "activities").to_table()
    rows = {r["uid"]: r for r in table.select(["uid", "activity_type", EXTRA_FIELD]).to_pylist()}
    assert {uid for uid, r in rows.items() if r["activity_type"] == "other"} == odd
    assert {json.loads(rows[uid][EXTRA_FIELD])["activity_type"] for uid in odd} == {"sms"}  # nothing lost
    assert len([w for w in warnings if "sms" in " ".join(map(str, w))]) == 1

    run(activities_op(output), NOV_2)  # the source has no unknown type any more
    table = read_dataset(root, "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(api, NOV_2, 1)
    assert no_duplicates(table.column("uid").to_pylist())
    manifest = manifests(contents(root), "activities")[other]
    assert manifest["rows"] == 0  # replaced, not left behind with the earlier run's rows

    run(activities_op(output, activity_type="email"), NOV_2)  # a one-type run owns only its type
    assert manifests(contents(root), "activities")[other]["run_id"] == manifest["run_id"]


@pytest.mark.parametrize("compression", ["zstd", "snappy", "gzip", "lz4_raw", "brotli", "none"])
def test_each_compression_codec_writes_readable_files(api: Sandbox, tmp_path: Any, compression: str) -> None:
    output = lake(tmp_path)
    run(participants_op(output, compression=compression), START)
    table = read_dataset(root_of(output), "participants").to_table()
    assert participant_keys_by_day(table) == expected_participant_keys(api, START, 1)
    metadata = pq.ParquetFile(f"{tmp_path}/lake/participants/activity_date=2026-11-01/part-00000.parquet").metadata
    codec = {"none": "UNCOMPRESSED", "lz4_raw": "LZ4"}.get(compression, compression.upper())
    assert metadata.row_group(0).column(0).compression == codec


def test_a_value_of_the_wrong_type_fails_the_task_naming_field_uid_and_value(
    api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    victim = api.expected_activities(START, START + DAY)[5]["uid"]

    def corrupt(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            if record.get("uid") == victim:
                record["number_of_participants"] = "many"
        return records

    output = lake(tmp_path)
    run(activities_op(output), START)
    before = contents(root_of(output))
    _patch_pages(monkeypatch, corrupt)
    with pytest.raises(ValueError, match=rf"number_of_participants.*{victim}.*'many'"):
        run(activities_op(output), START)
    assert contents(root_of(output)) == before  # nothing published, no staging left


# -- failures while writing --------------------------------------------------------------------


def _add_new_day_one_data(sb: Sandbox) -> set[str]:
    return {a["uid"] for a in sb.add_activities(5, timestamp=START + timedelta(hours=15))}


def test_a_storage_error_while_writing_leaves_the_previous_partitions_and_a_rerun_succeeds(
    api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    output = lake(tmp_path)
    root = root_of(output)
    run(activities_op(output), START, START + 2 * DAY)
    before = contents(root)
    previous = read_dataset(root, "activities").to_table().column("uid").to_pylist()
    added = _add_new_day_one_data(api)

    drains = {"count": 0}
    real_drain = parquet_module._AppendSink.drain

    def failing_drain(self: Any) -> None:
        drains["count"] += 1
        if drains["count"] > 5:  # five row groups went to staging files, then the disk is full
            raise OSError(28, "No space left on device")
        real_drain(self)

    with monkeypatch.context() as patch:
        patch.setattr(parquet_module._AppendSink, "drain", failing_drain)
        with pytest.raises(OSError, match="No space left"):
            run(activities_op(output, max_rows_per_file=20), START, START + 2 * DAY)
    assert drains["count"] > 5
    assert contents(root) == before  # byte for byte, and no staging left behind
    assert not (tmp_path / "lake" / "activities" / STAGING_DIR).exists()
    assert sorted(read_dataset(root, "activities").to_table().column("uid").to_pylist()) == sorted(previous)

    run(activities_op(output), START, START + 2 * DAY)
    table = read_dataset(root, "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(api, START, 2)
    assert added <= set(table.column("uid").to_pylist())
    assert_complete_partitions(contents(root), "activities", activity_partitions(START, 2))


def test_a_storage_error_while_publishing_leaves_every_partition_as_before_and_a_rerun_succeeds(
    api: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    template = lake(tmp_path, "template")
    run(activities_op(template), START, START + 2 * DAY)
    _add_new_day_one_data(api)
    counting = lake(tmp_path, "counting")
    _copy_local(tmp_path / "template", tmp_path / "counting")
    with monkeypatch.context() as patch:
        counted = FailingOperations(patch, root_of(counting).fs, fail_at=None)
        run(activities_op(counting), START, START + 2 * DAY)
    operations = counted.count
    assert operations >= 12, counted.calls  # rename aside and into place for each of 6 partitions ...

    failed_cases = 0
    renames = {index for index, name in enumerate(counted.calls) if name == "mv"}  # every swap step
    cases = sorted(set(range(0, operations, 3)) | renames | {operations - 1})
    for fail_at in cases:
        output = lake(tmp_path, f"case-{fail_at}")
        _copy_local(tmp_path / "template", tmp_path / f"case-{fail_at}")
        root = root_of(output)
        before = contents(root)
        with monkeypatch.context() as patch:
            FailingOperations(patch, root.fs, fail_at=fail_at)
            try:
                run(activities_op(output), START, START + 2 * DAY)
                failed = False
            except InjectedFailure:
                failed = True
        where = f"failure at storage operation {fail_at} of {counted.calls}"
        listing = contents(root)
        if failed:
            failed_cases += 1
            assert listing == before, where
            assert not (tmp_path / f"case-{fail_at}" / "activities" / STAGING_DIR).exists(), where
        else:  # the failure hit the best-effort removal of staging, after publishing
            assert_complete_partitions(
                {p: d for p, d in listing.items() if STAGING_DIR not in p}, "activities", activity_partitions(START, 2)
            )
        run(activities_op(output), START, START + 2 * DAY)
        table = read_dataset(root, "activities").to_table()
        assert activity_uids_by_partition(table) == expected_activity_uids(api, START, 2), where
    assert failed_cases == len(cases) - 1  # all but the removal of staging, after publishing


def _copy_local(source: Any, target: Any) -> None:
    shutil.copytree(source, target)


def test_an_api_failure_mid_stream_leaves_the_previous_partitions_and_no_staging(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    connect(monkeypatch, sandbox, max_retries=1, max_concurrency=1)
    output = lake(tmp_path)
    root = root_of(output)
    run(participants_op(output), NOV_2)
    before = contents(root)

    fetch = hook_module.PeopleAIHook._fetch_page

    def fetch_then_break(self: Any, path: str, filters: dict[str, str], offset: int, parse: Any) -> Page:
        if offset == 500:  # five pages in: the API goes down for good
            sandbox.faults.fail_next(100, status=500)
        return fetch(self, path, filters, offset, parse)

    monkeypatch.setattr(hook_module.PeopleAIHook, "_fetch_page", fetch_then_break)
    # Row groups of 20 rows, and batches of one page, so that files are in staging when the API
    # fails (not only buffers).
    monkeypatch.setattr(streams_module, "BATCH_ROWS", 1)
    monkeypatch.setattr(
        operator_module, "PartitionedParquetWriter", functools.partial(parquet_module.PartitionedParquetWriter, row_group_size=20)
    )
    discarded: list[int] = []

    def discard(staging: ObjectStoragePath) -> None:
        discarded.append(len(staging.fs.find(staging.path)))
        discard_staging(staging)

    monkeypatch.setattr(operator_module, "discard_staging", discard)
    with pytest.raises(PeopleAIAPIError, match="500"):
        run(participants_op(output, max_rows_per_file=50), NOV_2)
    assert discarded and discarded[0] >= 5  # staged files of the failed run, removed
    assert contents(root) == before
    assert not (tmp_path / "lake" / "participants" / STAGING_DIR).exists()


# -- bad input ---------------------------------------------------------------------------------

BAD_INPUTS: list[tuple[str, Operator, dict[str, Any], str]] = [
    ("unknown activity_type", activities_op, {"activity_type": "fax"}, r"activity_type='fax' is not an activity type"),
    (
        "unknown activity_type, templated",
        activities_op,
        {"activity_type": "{{ 'fax' }}"},
        r"activity_type='fax' is not an activity type",
    ),
    ("end before start", activities_op, {"start": NOV_2, "end": START}, r"end \(2026-11-01.*is before start \(2026-11-02"),
    (
        "zero-width interval",
        participants_op,
        {"start": "{{ data_interval_end }}", "end": "{{ data_interval_end }}"},
        r"zero-width.*CronDataIntervalTimetable.*start/end",
    ),
    (
        "interval not on UTC midnights",
        activities_op,
        {"start": START + timedelta(hours=6), "end": NOV_2 + timedelta(hours=6)},
        r"partition_by='day' needs start and end on UTC midnights.*Use partition_by='interval'",
    ),
    ("naive start", activities_op, {"start": datetime(2026, 11, 1)}, r"start=.*has no timezone"),
    ("naive end, as text", participants_op, {"end": "2026-11-02T00:00:00"}, r"end='2026-11-02T00:00:00' has no timezone"),
    ("unparsable start", activities_op, {"start": "yesterday"}, r"start='yesterday' is not an ISO-8601 datetime"),
    ("unsupported scheme", activities_op, {"output_path": "ftp://host/lake"}, r"output_path='ftp://host/lake'.*scheme 'ftp'"),
    (
        "unsupported scheme, templated",
        participants_op,
        {"output_path": "{{ 'http://host/lake' }}"},
        r"output_path='http://host/lake'.*scheme 'http' is not supported",
    ),
    ("relative file path", activities_op, {"output_path": "file://lake/activities"}, r"output_path=.*must be absolute"),
    ("no scheme", activities_op, {"output_path": "/data/lake"}, r"output_path='/data/lake' has no scheme"),
    ("'..' segment", participants_op, {"output_path": "file:///data/../etc"}, r"output_path=.*'\.\.' segment"),
    (
        "'..' segment, templated",
        activities_op,
        {"output_path": "{{ 's3://bucket/a/../b' }}"},
        r"output_path=.*'\.\.' segment",
    ),
    ("missing peopleai connection", activities_op, {"peopleai_conn_id": "peopleai_nowhere"}, r"peopleai_conn_id='peopleai_nowhere'"),
    (
        "missing peopleai connection, templated",
        participants_op,
        {"peopleai_conn_id": "{{ 'peopleai_nowhere' }}"},
        r"peopleai_conn_id='peopleai_nowhere'.*AIRFLOW_CONN_PEOPLEAI_NOWHERE",
    ),
    ("missing output connection", activities_op, {"output_conn_id": "s3_nowhere"}, r"output_conn_id='s3_nowhere'"),
    ("unknown partition_by", activities_op, {"partition_by": "hour"}, r"partition_by='hour'"),
    ("unknown compression", participants_op, {"compression": "lzma"}, r"compression='lzma'"),
    ("max_rows_per_file not a count", activities_op, {"max_rows_per_file": True}, r"max_rows_per_file=True"),
    ("interval mode across midnight", activities_op, {"partition_by": "interval", "end": START + 2 * DAY}, r"partition_by='day'"),
]


@pytest.mark.parametrize(("make", "arguments", "message"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_each_bad_input_fails_before_any_call_or_write(
    api: Sandbox, tmp_path: Any, make: Operator, arguments: dict[str, Any], message: str
) -> None:
    arguments = {"output_path": lake(tmp_path), **arguments}
    with pytest.raises(ValueError, match=message):
        run(make(**arguments), START)
    assert api.requests == []
    assert list(tmp_path.iterdir()) == []


# -- sub-daily partitions ----------------------------------------------------------------------


def test_partition_by_interval_writes_one_partition_per_type_for_an_hourly_run(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    hours = [START + DAY + timedelta(hours=h) for h in (14, 15, 16)]  # business hours: busy
    summaries = []
    for hour in hours[:2]:
        summaries.append(run(activities_op(output, partition_by="interval"), hour, hour + timedelta(hours=1)))
        run(participants_op(output, partition_by="interval"), hour, hour + timedelta(hours=1))

    label = "interval=20261102T1400Z_20261102T1500Z"
    assert [p["partition"] for p in summaries[0]["partitions"]] == [
        f"activity_type={kind}/activity_date=2026-11-02/{label}" for kind in TYPES
    ]
    root = root_of(output)
    table = read_dataset(root, "activities", keys=("activity_type", "activity_date", "interval")).to_table()
    found: dict[tuple[str, str], list[str]] = {}
    for record in table.select(["activity_type", "interval", "uid"]).to_pylist():
        found.setdefault((record["activity_type"], record["interval"]), []).append(record["uid"])
    expected = {}
    for hour in hours[:2]:
        key = f"{hour:%Y%m%dT%H%MZ}_{hour + timedelta(hours=1):%Y%m%dT%H%MZ}"
        for kind in TYPES:
            uids = sorted(r["uid"] for r in api.expected_activities(hour, hour + timedelta(hours=1), kind))
            if uids:
                expected[(kind, key)] = uids
    assert {key: sorted(uids) for key, uids in found.items()} == expected
    assert sum(len(uids) for uids in expected.values()) > 10
    assert set(table.column("activity_date").to_pylist()) == {"2026-11-02"}

    people = read_dataset(root, "participants", keys=("activity_date", "interval")).to_table()
    expected_people = sorted(
        (participant_key(r) for hour in hours[:2] for r in api.expected_participants(hour, hour + timedelta(hours=1))), key=repr
    )
    assert sorted((participant_key(r) for r in people.to_pylist()), key=repr) == expected_people
    listing = contents(root)
    assert_complete_partitions(
        listing,
        "participants",
        [f"activity_date=2026-11-02/interval={h:%Y%m%dT%H%MZ}_{h + timedelta(hours=1):%Y%m%dT%H%MZ}" for h in hours[:2]],
    )


# -- Airflow integration -----------------------------------------------------------------------


def test_the_return_value_is_small_json_without_secrets(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    summary = run(activities_op(output), START, START + 2 * DAY)
    people = run(participants_op(output), START, START + 2 * DAY)

    for result, dataset, partitions in (
        (summary, "activities", activity_partitions(START, 2)),
        (people, "participants", participant_partitions(START, 2)),
    ):
        assert json.loads(json.dumps(result)) == result
        assert set(result) == {"dataset", "rows", "partitions", "duplicates_dropped", "outside_interval_dropped"}
        assert result["dataset"] == dataset
        assert [p["partition"] for p in result["partitions"]] == sorted(partitions)
        for partition in result["partitions"]:
            assert set(partition) == {"partition", "uri", "rows"}
            assert partition["uri"] == f"{output}/{dataset}/{partition['partition']}"
        assert result["rows"] == sum(p["rows"] for p in result["partitions"]) > 0
        text = json.dumps(result)
        assert SECRET not in text and api.client_id not in text and "password" not in text
        assert len(text) < 2000


def test_a_static_output_path_declares_an_asset_and_fills_its_event_extra(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    op = activities_op(output)
    assert op.outlets == [Asset(uri=f"{output}/activities", name=f"peopleai-activities:{output}")]
    people = participants_op(output + "/")
    assert [outlet.uri for outlet in people.outlets] == [f"{output}/participants"]

    events = OutletEventAccessors()
    summary = run(op, START, START + 2 * DAY, outlet_events=events)
    assert events[op.outlets[0]].extra == {
        "rows": summary["rows"],
        "partitions": [p["partition"] for p in summary["partitions"]],
    }


def test_a_templated_output_path_declares_an_alias_and_adds_the_rendered_asset(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    op = participants_op("{{ params.lake }}")
    assert op.outlets == [AssetAlias(name="peopleai-participants")]

    events = OutletEventAccessors()
    summary = run(op, START, outlet_events=events, params={"lake": output})
    if not AIRFLOW_V_3_0_PLUS:  # Airflow 2: a dataset alias event names its dataset by URI only
        assert events[AssetAlias(name="peopleai-participants")].dataset_alias_events == [
            {
                "source_alias_name": "peopleai-participants",
                "dest_dataset_uri": f"{output}/participants",
                "extra": {"rows": summary["rows"], "partitions": ("activity_date=2026-11-01",)},
            }
        ]
        return
    alias_events = events[AssetAlias(name="peopleai-participants")].asset_alias_events
    assert len(alias_events) == 1
    assert alias_events[0].dest_asset_key.uri == f"{output}/participants"
    assert alias_events[0].dest_asset_key.name == f"peopleai-participants:{output}"
    assert alias_events[0].extra == {"rows": summary["rows"], "partitions": ["activity_date=2026-11-01"]}


def test_an_explicit_start_and_end_override_the_data_interval(api: Sandbox, tmp_path: Any) -> None:
    output = lake(tmp_path)
    op = activities_op(output, start="2026-11-03T00:00:00Z", end="{{ data_interval_end }}", activity_type="{{ 'meeting' }}")
    summary = run(op, START, START + 3 * DAY)
    assert [p["partition"] for p in summary["partitions"]] == ["activity_type=meeting/activity_date=2026-11-03"]
    table = read_dataset(root_of(output), "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(api, START + 2 * DAY, 1, types=("meeting",))
    assert not re.search(r"activity_date=2026-11-0[12]", " ".join(contents(root_of(output))))
