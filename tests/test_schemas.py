"""The explicit Arrow schemas: vendor fields and types, metadata, file schemas, fingerprints."""

from __future__ import annotations

import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_activities.records.schemas import (
    ACTIVITY_SCHEMA,
    EXTRA_FIELD,
    PARTICIPANT_SCHEMA,
    TIMESTAMP,
    file_schema,
    schema_fingerprint,
)

# Field by field from the vendor's Activity API document (activities-api.txt), in its order.
VENDOR_ACTIVITY_FIELDS = {
    "crm_id": "string",
    "user_id": "integer",
    "is_partner": "boolean",
    "with_partner": "boolean",
    "opportunity_id": "integer",
    "opportunity_ids": "integer list",
    "opportunity_crm_id": "string",
    "opportunity_crm_ids": "string list",
    "opportunity_stage_id": "string",
    "account_id": "integer",
    "account_crm_id": "string",
    "matched_to": "string",
    "lead_id": "integer",
    "lead_crm_id": "string",
    "created_at": "timestamp",
    "activity_type": "string",
    "subtype": "string",
    "timestamp": "timestamp",
    "external": "boolean",
    "uid": "string",
    "activity_source_id": "string",
    "direction": "string",
    "meeting_start_time": "timestamp",
    "meeting_end_time": "timestamp",
    "meeting_status": "string",
    "in_reply_to_source_id": "string",
    "outbound_phone_number": "string",
    "duration": "float",
    "number_of_participants": "integer",
}
VENDOR_PARTICIPANT_FIELDS = {
    "user_id": "integer",
    "id": "integer",
    "name": "string",
    "email": "string",
    "job_title": "string",
    "phone_number": "string",
    "seniority": "string",
    "department": "string",
    "external": "boolean",
    "original": "boolean",
    "status": "string",
    "source_id": "string",
    "is_originator": "boolean",
    "activity_uid": "string",
    "activity_crm_id": "string",
    "account_id": "integer",
    "account_crm_id": "string",
    "opportunity_id": "integer",
    "opportunity_crm_id": "string",
    "lead_id": "integer",
    "lead_crm_id": "string",
    "activity_timestamp": "timestamp",
    "created_at": "timestamp",
    "deleted": "boolean",
    "duration": "integer",
}
ARROW_OF_VENDOR = {
    "string": pa.string(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "timestamp": TIMESTAMP,
    "float": pa.float64(),
    "integer list": pa.list_(pa.int64()),
    "string list": pa.list_(pa.string()),
}


@pytest.mark.parametrize(
    ("schema", "vendor", "own"),
    [
        (ACTIVITY_SCHEMA, VENDOR_ACTIVITY_FIELDS, ["ingested_at", EXTRA_FIELD]),
        (PARTICIPANT_SCHEMA, VENDOR_PARTICIPANT_FIELDS, [EXTRA_FIELD]),
    ],
    ids=["activities", "participants"],
)
def test_schema_has_every_vendor_field_with_its_type(schema: pa.Schema, vendor: dict[str, str], own: list[str]) -> None:
    assert schema.names == [*vendor, *own]
    for name, vendor_type in vendor.items():
        assert schema.field(name).type == ARROW_OF_VENDOR[vendor_type], name
    assert schema.names[-1] == EXTRA_FIELD
    assert schema.field(EXTRA_FIELD).type == pa.string()


def test_specific_types() -> None:
    assert pa.timestamp("ms", tz="UTC") == TIMESTAMP
    assert ACTIVITY_SCHEMA.field("ingested_at").type == TIMESTAMP
    assert ACTIVITY_SCHEMA.field("duration").type == pa.float64()
    assert PARTICIPANT_SCHEMA.field("duration").type == pa.int64()
    assert ACTIVITY_SCHEMA.field("opportunity_ids").type == pa.list_(pa.int64())
    assert ACTIVITY_SCHEMA.field("opportunity_crm_ids").type == pa.list_(pa.string())


@pytest.mark.parametrize("schema", [ACTIVITY_SCHEMA, PARTICIPANT_SCHEMA], ids=["activities", "participants"])
def test_fields_are_nullable_and_described_without_wall_clock_metadata(schema: pa.Schema) -> None:
    wall_clock = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}:\d{2}")
    for field in schema:
        assert field.nullable, field.name
        assert set(field.metadata) == {b"description"}, field.name
        description = field.metadata[b"description"].decode()
        assert len(description) > 10, field.name
        assert not wall_clock.search(description), field.name
    for key, value in (schema.metadata or {}).items():
        assert not wall_clock.search(value.decode()), key
    assert ACTIVITY_SCHEMA.field("uid").metadata[b"description"] == b"Unique peopl.ai identifier for the activity"


def test_file_schema_drops_partition_columns_only() -> None:
    files = file_schema(ACTIVITY_SCHEMA, ["activity_type", "activity_date"])
    assert "activity_type" not in files.names
    assert files.names == [name for name in ACTIVITY_SCHEMA.names if name != "activity_type"]
    assert files.field("uid").metadata == ACTIVITY_SCHEMA.field("uid").metadata
    assert file_schema(PARTICIPANT_SCHEMA, []) == PARTICIPANT_SCHEMA


def test_fingerprint_is_stable_across_processes() -> None:
    code = (
        "from airflow_provider_activities.records.schemas import ACTIVITY_SCHEMA, PARTICIPANT_SCHEMA, schema_fingerprint;"
        "print(schema_fingerprint(ACTIVITY_SCHEMA), schema_fingerprint(PARTICIPANT_SCHEMA))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert output == [schema_fingerprint(ACTIVITY_SCHEMA), schema_fingerprint(PARTICIPANT_SCHEMA)]
    assert re.fullmatch(r"[0-9a-f]{64}", output[0])


def test_fingerprint_tells_schemas_apart() -> None:
    base = schema_fingerprint(ACTIVITY_SCHEMA)
    retyped = ACTIVITY_SCHEMA.set(
        ACTIVITY_SCHEMA.get_field_index("duration"), ACTIVITY_SCHEMA.field("duration").with_type(pa.int64())
    )
    assert schema_fingerprint(retyped) != base
    assert schema_fingerprint(file_schema(ACTIVITY_SCHEMA, ["activity_type"])) != base
    redescribed = ACTIVITY_SCHEMA.set(0, ACTIVITY_SCHEMA.field(0).with_metadata({"description": "other"}))
    assert schema_fingerprint(redescribed) != base
    assert schema_fingerprint(ACTIVITY_SCHEMA.remove(0)) != base


def test_fingerprint_survives_a_parquet_round_trip(tmp_path) -> None:
    schema = file_schema(ACTIVITY_SCHEMA, ["activity_type"])
    path = tmp_path / "empty.parquet"
    pq.ParquetWriter(str(path), schema).close()
    read_back = pq.read_schema(str(path))
    # Parquet renames a list's item field ("item" -> "element"); the fingerprint does not depend on it.
    assert schema_fingerprint(read_back) == schema_fingerprint(schema)
