"""OpenLineage metadata of a run (``airflow_provider_activities.lineage``).

* Dataset names: plain functions, tested with or without the OpenLineage provider.
* Facets and ``OperatorLineage``: tested when the provider is installed (skipped otherwise).
* Without the provider: ``run_lineage`` answers ``None`` and importing the module imports no
  OpenLineage package (tested by hiding the provider when it is installed).
* End to end: ``tests/dags/lineage_probe.py`` runs under ``dag.test()`` with the provider's
  ``file`` transport, and the COMPLETE events written to the file are checked. The DAG runs in a
  subprocess, because the provider decides once per process, when Airflow loads its plugin,
  whether it is enabled (any transport configured): the pytest process loaded the plugins
  before, with no transport set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_activities.compat import ObjectStoragePath
from airflow_provider_activities.lineage import (
    ARRAY_ELEMENT,
    OutputStatistics,
    api_dataset_id,
    dataset_id,
    openlineage_available,
    operator_lineage,
    run_lineage,
)
from airflow_provider_activities.records.schemas import ACTIVITY_SCHEMA, PARTICIPANT_SCHEMA, RAW_ACTIVITY_SCHEMA
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.dag_fixtures import airflow_db  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
DAGS = Path(__file__).parent / "dags"

needs_openlineage = pytest.mark.skipif(
    not openlineage_available(),
    reason="the OpenLineage provider is not installed (pip install 'airflow-provider-activities[openlineage]')",
)

SECRETS = ("s3cr3t-password", "tok3n-value", "X-Amz-Signature", "sig-123", "aws_lake_conn")
"""Strings put in URLs (passwords, tokens, signatures, a connection id) that no facet may carry."""


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "endpoint", "expected"),
    [
        ("https://api.people.ai", "/v0/public/activities", ("https://api.people.ai", "/v0/public/activities")),
        ("https://API.People.ai/", "/v0/public/activities", ("https://api.people.ai", "/v0/public/activities")),
        (
            "http://127.0.0.1:8765",
            "/v0/public/activities/participants",
            ("http://127.0.0.1:8765", "/v0/public/activities/participants"),
        ),
        (
            "https://gw.example.com/peopleai/",
            "/v0/public/activities",
            ("https://gw.example.com", "/peopleai/v0/public/activities"),
        ),
        ("http://[::1]:9000", "/pull/v1/export/activities/jobs", ("http://[::1]:9000", "/pull/v1/export/activities/jobs")),
        (
            "https://client:s3cr3t-password@api.people.ai/?access_token=tok3n-value#frag",
            "/v0/public/activities?limit=100&token=tok3n-value",
            ("https://api.people.ai", "/v0/public/activities"),
        ),
    ],
)
def test_the_api_is_named_by_its_origin_and_endpoint_path(base_url: str, endpoint: str, expected: tuple[str, str]) -> None:
    assert api_dataset_id(base_url, endpoint) == expected


@pytest.mark.parametrize(
    ("base_url", "endpoint", "parameter"),
    [
        ("api.people.ai", "/v0/public/activities", "base_url"),
        ("ftp://api.people.ai", "/v0/public/activities", "base_url"),
        ("ftp://client:s3cr3t-password@api.people.ai/?access_token=tok3n-value", "/v0/public/activities", "base_url"),
        ("https://api.people.ai", "v0/public/activities", "endpoint_path"),
        ("https://api.people.ai", "https://files.example.com/export.jsonl?X-Amz-Signature=sig-123", "endpoint_path"),
    ],
)
def test_an_api_that_is_not_a_url_and_a_path_is_refused_naming_the_parameter(
    base_url: str, endpoint: str, parameter: str
) -> None:
    with pytest.raises(ValueError, match=parameter) as raised:
        api_dataset_id(base_url, endpoint)
    assert not [secret for secret in SECRETS if secret in str(raised.value)], raised.value


@pytest.mark.parametrize(
    ("root", "expected"),
    [
        ("file:///data/lake/activities", ("file", "/data/lake/activities")),
        ("file:///data/lake/activities/", ("file", "/data/lake/activities")),
        ("/data/lake/activities", ("file", "/data/lake/activities")),
        ("file://nas-01/data/lake/activities", ("file://nas-01", "/data/lake/activities")),
        ("file://localhost/data/lake/activities", ("file", "/data/lake/activities")),
        ("s3://bucket/prefix/activities", ("s3://bucket", "prefix/activities")),
        ("s3a://bucket/prefix/activities", ("s3://bucket", "prefix/activities")),
        ("s3://aws_lake_conn@bucket/prefix/activities", ("s3://bucket", "prefix/activities")),
        ("s3://AKIA:s3cr3t-password@bucket/activities?X-Amz-Signature=sig-123", ("s3://bucket", "activities")),
        ("s3://bucket", ("s3://bucket", "/")),
        ("gs://bucket/prefix/raw_activities", ("gs://bucket", "prefix/raw_activities")),
        ("gcs://bucket/prefix/raw_activities", ("gs://bucket", "prefix/raw_activities")),
        ("abfs://container/lake/activities", ("abfs://container", "lake/activities")),
        (
            "abfss://container@account.dfs.core.windows.net/lake/activities",
            ("abfss://container@account.dfs.core.windows.net", "lake/activities"),
        ),
    ],
)
def test_a_dataset_root_is_named_as_the_openlineage_naming_spec_says(root: str, expected: tuple[str, str]) -> None:
    assert dataset_id(root) == expected


def test_an_object_storage_path_is_named_without_its_connection_id(tmp_path: Path) -> None:
    assert dataset_id(ObjectStoragePath(f"file://{tmp_path}/lake") / "activities") == ("file", f"{tmp_path}/lake/activities")
    s3 = ObjectStoragePath("s3://bucket/prefix", conn_id="aws_lake_conn") / "participants"
    assert "aws_lake_conn" in str(s3)  # the path's own text carries it ...
    assert dataset_id(s3) == ("s3://bucket", "prefix/participants")  # ... the name does not


@pytest.mark.parametrize("root", ["data/lake", "s3:///prefix", "s3://aws_lake_conn@/prefix?X-Amz-Signature=sig-123"])
def test_a_root_without_a_place_is_refused(root: str) -> None:
    with pytest.raises(ValueError, match="root=") as raised:
        dataset_id(root)
    assert not [secret for secret in SECRETS if secret in str(raised.value)], raised.value


def test_statistics_add_up_the_written_files() -> None:
    @dataclass
    class Written:
        rows: int
        bytes: int

    files = {
        "activity_type=email/activity_date=2026-11-01": [Written(1_000_000, 40_000_000), Written(5, 900)],
        "activity_type=call/activity_date=2026-11-01": [Written(0, 600)],
        "activity_type=meeting/activity_date=2026-11-01": [],
    }
    assert OutputStatistics.of_files(files) == OutputStatistics(rows=1_000_005, bytes=40_001_500, files=3)
    assert OutputStatistics.of_files({}) == OutputStatistics(rows=0, bytes=0, files=0)


# --------------------------------------------------------------------------------------------
# Facets (with the OpenLineage provider)
# --------------------------------------------------------------------------------------------


def as_dict(value: Any) -> Any:
    """A facet or dataset as the OpenLineage client serialises it into an event."""
    from openlineage.client.serde import Serde

    return Serde.to_dict(value)


def expected_fields(schema_or_type: pa.Schema | pa.DataType) -> list[dict[str, Any]]:
    """The facet's fields for an Arrow schema, spelled out from Arrow's own field lists."""
    if isinstance(schema_or_type, pa.Schema) or pa.types.is_struct(schema_or_type):
        fields = list(schema_or_type)
    elif pa.types.is_list(schema_or_type):
        fields = [schema_or_type.value_field.with_name(ARRAY_ELEMENT)]
    else:
        return []
    found = []
    for field in fields:
        entry: dict[str, Any] = {"name": field.name, "type": _kind(field.type)}
        description = (field.metadata or {}).get(b"description")
        if description is not None:
            entry["description"] = description.decode()
        children = expected_fields(field.type)
        if children:
            entry["fields"] = children
        found.append(entry)
    return found


def _kind(type_: pa.DataType) -> str:
    return "struct" if pa.types.is_struct(type_) else "list" if pa.types.is_list(type_) else str(type_)


@needs_openlineage
def test_the_schema_facet_has_every_field_with_its_type_and_description() -> None:
    from airflow_provider_activities.lineage import schema_facet

    facet = as_dict(schema_facet(ACTIVITY_SCHEMA))
    assert [field["name"] for field in facet["fields"]] == ACTIVITY_SCHEMA.names
    assert facet["fields"] == expected_fields(ACTIVITY_SCHEMA)
    by_name = {field["name"]: field for field in facet["fields"]}
    assert by_name["timestamp"]["type"] == "timestamp[ms, tz=UTC]"
    assert by_name["opportunity_ids"] == {
        "name": "opportunity_ids",
        "type": "list",
        "description": "List of backstory identifiers for all opportunities matched to the activity",
        "fields": [{"name": "_element", "type": "int64"}],
    }


@needs_openlineage
def test_the_raw_schemas_structs_and_lists_are_nested_fields() -> None:
    from airflow_provider_activities.lineage import schema_facet

    facet = as_dict(schema_facet(RAW_ACTIVITY_SCHEMA))
    assert facet["fields"] == expected_fields(RAW_ACTIVITY_SCHEMA)
    by_name = {field["name"]: field for field in facet["fields"]}
    campaigns = by_name["campaigns"]  # list<struct<crm_id, name, start_date, end_date>>
    assert campaigns["type"] == "list"
    (element,) = campaigns["fields"]
    assert (element["name"], element["type"]) == ("_element", "struct")
    assert [(f["name"], f["type"]) for f in element["fields"]] == [
        ("crm_id", "string"),
        ("name", "string"),
        ("start_date", "date32[day]"),
        ("end_date", "date32[day]"),
    ]
    crm_status = by_name["crm_status"]  # struct<pushed, push_time, crm_id, matched_to>
    assert crm_status["type"] == "struct"
    assert [f["name"] for f in crm_status["fields"]] == ["pushed", "push_time", "crm_id", "matched_to"]
    nested = [name for name, field in by_name.items() if "fields" in field]
    assert nested == [f.name for f in RAW_ACTIVITY_SCHEMA if pa.types.is_nested(f.type)]


@needs_openlineage
def test_maps_and_lists_of_lists_are_nested_too() -> None:
    from airflow_provider_activities.lineage import schema_facet

    schema = pa.schema(
        [
            pa.field("labels", pa.map_(pa.string(), pa.int64())),
            pa.field("matrix", pa.list_(pa.list_(pa.float64()))),
            pa.field("big", pa.large_list(pa.string())),
            pa.field("pair", pa.list_(pa.int32(), 2)),
        ]
    )
    fields = as_dict(schema_facet(schema))["fields"]
    assert fields == [
        {
            "name": "labels",
            "type": "map",
            "fields": [{"name": "key", "type": "string"}, {"name": "value", "type": "int64"}],
        },
        {
            "name": "matrix",
            "type": "list",
            "fields": [{"name": "_element", "type": "list", "fields": [{"name": "_element", "type": "double"}]}],
        },
        {"name": "big", "type": "large_list", "fields": [{"name": "_element", "type": "string"}]},
        {"name": "pair", "type": "fixed_size_list[2]", "fields": [{"name": "_element", "type": "int32"}]},
    ]


@needs_openlineage
def test_a_runs_lineage_has_the_api_in_and_the_dataset_root_out_with_schema_and_statistics() -> None:
    lineage = run_lineage(
        base_url="https://api.people.ai",
        endpoint_path="/v0/public/activities",
        root="s3://bucket/lake/activities",
        schema=ACTIVITY_SCHEMA,
        statistics=OutputStatistics(rows=55_000, bytes=3_100_000, files=7),
    )
    assert lineage is not None
    assert [as_dict(dataset) for dataset in lineage.inputs] == [
        {"namespace": "https://api.people.ai", "name": "/v0/public/activities", "facets": {}}
    ]
    (output,) = (as_dict(dataset) for dataset in lineage.outputs)
    assert (output["namespace"], output["name"]) == ("s3://bucket", "lake/activities")
    assert output["facets"]["schema"]["fields"] == expected_fields(ACTIVITY_SCHEMA)
    statistics = output["outputFacets"]["outputStatistics"]
    assert {key: statistics[key] for key in ("rowCount", "size", "fileCount")} == {
        "rowCount": 55_000,
        "size": 3_100_000,
        "fileCount": 7,
    }
    assert statistics["_schemaURL"].startswith("https://openlineage.io/spec/facets/")


@needs_openlineage
def test_before_the_run_the_output_has_its_schema_and_no_statistics() -> None:
    lineage = run_lineage(
        base_url="https://api.people.ai",
        endpoint_path="/v0/public/activities/participants",
        root="gs://bucket/lake/participants",
        schema=ACTIVITY_SCHEMA,
    )
    assert lineage is not None
    (output,) = (as_dict(dataset) for dataset in lineage.outputs)
    assert (output["namespace"], output["name"]) == ("gs://bucket", "lake/participants")
    assert "schema" in output["facets"]
    assert output.get("outputFacets", {}) == {}


@needs_openlineage
def test_no_secret_token_connection_id_or_signature_reaches_a_facet() -> None:
    lineage = run_lineage(
        base_url="https://client:s3cr3t-password@api.people.ai/?access_token=tok3n-value",
        endpoint_path="/pull/v1/export/activities/jobs?token=tok3n-value",
        root=ObjectStoragePath("s3://bucket/lake", conn_id="aws_lake_conn") / "raw_activities",
        schema=RAW_ACTIVITY_SCHEMA,
        statistics=OutputStatistics(rows=1, bytes=2, files=1),
    )
    assert lineage is not None
    text = json.dumps([as_dict(dataset) for dataset in lineage.inputs + lineage.outputs])
    assert "raw_activities" in text and "api.people.ai" in text
    for secret in SECRETS:
        assert secret not in text
    query_root = run_lineage(
        base_url="https://api.people.ai",
        endpoint_path="/v0/public/activities",
        root="s3://AKIA:s3cr3t-password@bucket/lake/activities?X-Amz-Signature=sig-123",
    )
    assert query_root is not None
    text = json.dumps([as_dict(dataset) for dataset in query_root.outputs])
    assert not [secret for secret in SECRETS if secret in text], text


@needs_openlineage
def test_operator_lineage_keeps_the_datasets_given() -> None:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_activities.lineage import api_dataset, output_dataset

    inputs = [api_dataset("https://api.people.ai", "/v0/public/activities")]
    outputs = [output_dataset("file:///lake/activities"), output_dataset("file:///lake/participants")]
    lineage = operator_lineage(inputs, outputs)
    assert isinstance(lineage, OperatorLineage)
    assert (lineage.inputs, lineage.outputs) == (inputs, outputs)


# --------------------------------------------------------------------------------------------
# Without the OpenLineage provider
# --------------------------------------------------------------------------------------------


def test_without_the_provider_the_lineage_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider hidden from imports (``None`` in ``sys.modules`` makes an import fail)."""
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage", None)
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)
    assert not openlineage_available()
    assert operator_lineage([], []) is None
    assert (
        run_lineage(
            base_url="https://api.people.ai",
            endpoint_path="/v0/public/activities",
            root="file:///lake/activities",
            schema=ACTIVITY_SCHEMA,
            statistics=OutputStatistics(rows=1, bytes=2, files=1),
        )
        is None
    )


def test_importing_the_module_imports_no_openlineage_package() -> None:
    code = (
        "import sys, airflow_provider_activities.lineage\n"
        "loaded = sorted(m for m in sys.modules if 'openlineage' in m)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# --------------------------------------------------------------------------------------------
# End to end: dag.test() with the file transport
# --------------------------------------------------------------------------------------------

RUN_DAG = """
import json, sys
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 2
    from airflow.models.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
run = bag.dags[sys.argv[2]].test()
print("STATES " + json.dumps({ti.task_id: str(ti.state) for ti in run.get_task_instances()}))
"""


def _env(**extra: str) -> dict[str, str]:
    """This process's environment (the session's AIRFLOW_HOME ...), this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def task_events(events_file: Path, dag_id: str, task_id: str) -> dict[str, dict[str, Any]]:
    """The task's run events in the transport's file (JSON lines), by event type."""
    found: dict[str, dict[str, Any]] = {}
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        if event["job"]["name"] == f"{dag_id}.{task_id}":
            assert event["eventType"] not in found, f"two {event['eventType']} events for {task_id}"
            found[event["eventType"]] = event
    return found


@needs_openlineage
@pytest.mark.dag
def test_dag_test_with_the_file_transport_emits_complete_events_with_input_output_schema_and_statistics(
    airflow_db: Path,
    airflow_home: Path,
    tmp_path: Path,
) -> None:
    """The real operators, against the sandbox, each emit START and COMPLETE events naming the API
    endpoint they read and the dataset root they wrote, with its schema and (on COMPLETE) the rows,
    bytes and files on disk; no secret reaches the file.
    """
    dag_file = airflow_home / "dags" / "lineage_probe.py"
    dag_file.write_bytes((DAGS / "lineage_probe.py").read_bytes())
    events_file, lake = tmp_path / "openlineage.jsonl", tmp_path / "lake"
    with Sandbox(seed=3, activities=600, days=3, rate_limit=None, client_secret="s3cr3t-password") as sandbox:
        sandbox.export.settings.polls = 0
        env = _env(
            AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps({"type": "file", "log_file_path": str(events_file), "append": True}),
            AIRFLOW__OPENLINEAGE__NAMESPACE="peopleai-tests",
            AIRFLOW_VAR_LINEAGE_OUTPUT_PATH=f"file://{lake}",
            AIRFLOW_CONN_PEOPLEAI_DEFAULT=sandbox.connection_json(),
        )
        result = subprocess.run(
            [sys.executable, "-c", RUN_DAG, str(dag_file), "peopleai_lineage_probe"],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        api = sandbox.base_url
    states = json.loads(result.stdout.split("STATES ", 1)[1].splitlines()[0])
    assert states == {
        "extract_activities": "success",
        "extract_participants": "success",
        "export_raw_activities": "success",
    }

    cases = [
        ("extract_activities", "/v0/public/activities", "activities", ACTIVITY_SCHEMA),
        ("extract_participants", "/v0/public/activities/participants", "participants", PARTICIPANT_SCHEMA),
        ("export_raw_activities", "/pull/v1/export/activities/jobs", "raw_activities", RAW_ACTIVITY_SCHEMA),
    ]
    for task_id, endpoint, dataset, schema in cases:
        events = task_events(events_file, "peopleai_lineage_probe", task_id)
        assert set(events) == {"START", "COMPLETE"}, (task_id, sorted(events))
        complete = events["COMPLETE"]
        assert complete["job"]["namespace"] == "peopleai-tests"
        assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [(api, endpoint)]
        (output,) = complete["outputs"]
        assert (output["namespace"], output["name"]) == ("file", f"{lake}/{dataset}")
        assert output["facets"]["schema"]["fields"] == expected_fields(schema)
        written = sorted((lake / dataset).rglob("*.parquet"))
        statistics = output["outputFacets"]["outputStatistics"]
        assert (statistics["rowCount"], statistics["size"], statistics["fileCount"]) == (
            sum(pq.read_metadata(path).num_rows for path in written),
            sum(path.stat().st_size for path in written),
            len(written),
        )
        assert statistics["rowCount"] > 0
        start = events["START"]  # before the run: the same datasets, the schema, no statistics yet
        assert [(d["namespace"], d["name"]) for d in start["inputs"]] == [(api, endpoint)]
        (planned,) = start["outputs"]
        assert (planned["namespace"], planned["name"]) == ("file", f"{lake}/{dataset}")
        assert planned["facets"]["schema"]["fields"] == expected_fields(schema)
        assert "outputStatistics" not in planned.get("outputFacets", {})
    text = events_file.read_text()
    assert not [secret for secret in (*SECRETS, "sandbox-client-id") if secret in text]
