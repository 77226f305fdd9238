"""Records to Arrow (RecordConverter) and Arrow to partitioned Parquet (PartitionedParquetWriter)."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from airflow_provider_activities.compat import ObjectStoragePath
from airflow_provider_activities.records.convert import RecordConverter, SchemaMismatchError
from airflow_provider_activities.records.schemas import (
    ACTIVITY_PER_RECORD_FIELDS,
    ACTIVITY_SCHEMA,
    PARTICIPANT_SCHEMA,
    RAW_ACTIVITY_PER_RECORD_FIELDS,
    RAW_ACTIVITY_SCHEMA,
    file_schema,
)
from airflow_provider_activities.storage.partitioning import plan_partitions
from airflow_provider_activities.storage.writer import FileInfo, PartitionedParquetWriter, dictionary_columns
from tests.s3_fixtures import MotoS3, moto_s3, s3_root  # noqa: F401

DAY_MS = 86_400_000
NOV_1_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
ACTIVITY_FILE_SCHEMA = file_schema(ACTIVITY_SCHEMA, ["activity_type"])
TYPES = ("email", "call", "meeting")


def activity(index: int, day: int = 0, activity_type: str | None = None, **fields: Any) -> dict[str, Any]:
    """A realistic activity record (epoch-ms timestamps) on 2026-11-01 + ``day``."""
    moment = NOV_1_MS + day * DAY_MS + (index * 7_919_000) % DAY_MS
    record = {
        "uid": f"act-{day}-{index:06d}",
        "crm_id": f"00T{index:09d}",
        "user_id": 1000 + index % 37,
        "is_partner": index % 5 == 0,
        "with_partner": None if index % 3 else False,
        "opportunity_id": 5000 + index % 11,
        "opportunity_ids": [5000 + index % 11, 6000 + index % 7][: index % 3],
        "opportunity_crm_id": f"006{index % 11:09d}",
        "opportunity_crm_ids": [f"006{index % 11:09d}"],
        "opportunity_stage_id": "Stage 2",
        "account_id": 700 + index % 13,
        "account_crm_id": f"001{index % 13:09d}",
        "matched_to": "opportunity",
        "lead_id": None,
        "created_at": moment + 60_000,
        "activity_type": activity_type or TYPES[index % 3],
        "subtype": "outbound email",
        "timestamp": moment,
        "external": index % 2 == 0,
        "activity_source_id": f"src-{index}",
        "direction": "outbound" if index % 2 else "inbound",
        "duration": 1800.0 + index,
        "number_of_participants": 2 + index % 5,
    }
    record.update(fields)
    return record


def hive_dataset(path: str, filesystem: Any = None, typed: bool = True) -> ds.Dataset:
    """The activities (or participants) dataset below ``path``, read with hive partitioning."""
    keys = [("activity_type", pa.string())] if typed else []
    keys.append(("activity_date", pa.string()))
    partitioning = ds.partitioning(pa.schema(keys), flavor="hive")
    schema = ACTIVITY_SCHEMA if typed else PARTICIPANT_SCHEMA
    schema = schema.append(pa.field("activity_date", pa.string()))
    return ds.dataset(path, format="parquet", partitioning=partitioning, schema=schema, filesystem=filesystem)


def write_activities(
    root: ObjectStoragePath, records: list[dict[str, Any]], page_size: int = 1000, days: int = 2, **writer_options: Any
) -> dict[str, list[FileInfo]]:
    """Convert, route and write ``records`` the way the operator does; returns the files."""
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    plan = plan_partitions(start, start + timedelta(days=days), "day")
    converter = RecordConverter(ACTIVITY_SCHEMA)
    writer = PartitionedParquetWriter(root, ACTIVITY_FILE_SCHEMA, **writer_options)
    for offset in range(0, len(records), page_size):
        batch = converter.to_batch(records[offset : offset + page_size])
        for partition, rows in plan.split(batch, "timestamp", "activity_type"):
            writer.write(partition, rows.drop_columns(["activity_type"]))
    for partition in plan.owned():
        writer.ensure_partition(partition)
    return writer.close()


def digests(directory: Path) -> dict[str, str]:
    """sha256 of every file below ``directory`` by relative path."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def local(path: Path) -> ObjectStoragePath:
    return ObjectStoragePath(f"file://{path}")


# ============================================================================================
# RecordConverter
# ============================================================================================


def test_epoch_ms_iso_and_datetimes_convert_to_the_same_instant() -> None:
    moment = datetime(2026, 11, 1, 9, 30, 15, 250000, tzinfo=timezone.utc)
    forms = [
        NOV_1_MS + (9 * 3600 + 30 * 60 + 15) * 1000 + 250,
        "2026-11-01T09:30:15.250Z",
        "2026-11-01T11:30:15.250+02:00",
        "2026-11-01T04:30:15.250-05:00",
        moment,
        moment.astimezone(timezone(timedelta(hours=-7))),
    ]
    records = [{"uid": f"u{i}", "timestamp": form, "created_at": form} for i, form in enumerate(forms)]
    batch = RecordConverter(ACTIVITY_SCHEMA).to_batch(records)
    assert batch.schema == ACTIVITY_SCHEMA
    assert batch.column("timestamp").to_pylist() == [moment] * len(forms)
    assert batch.column("created_at").to_pylist() == [moment] * len(forms)


def test_values_and_missing_keys() -> None:
    record = activity(4, opportunity_ids=[1, 2], opportunity_crm_ids=("a", "b"), duration=12)
    del record["crm_id"]
    batch = RecordConverter(ACTIVITY_SCHEMA).to_batch([record, {"uid": "bare"}])
    first, second = batch.to_pylist()
    assert first["uid"] == "act-0-000004"
    assert first["crm_id"] is None
    assert first["opportunity_ids"] == [1, 2]
    assert first["opportunity_crm_ids"] == ["a", "b"]
    assert first["duration"] == 12.0
    assert first["is_partner"] is False
    assert first["_extra"] is None
    assert second["uid"] == "bare"
    assert all(value is None for name, value in second.items() if name != "uid")


def test_integral_floats_fit_integer_columns() -> None:
    batch = RecordConverter(ACTIVITY_SCHEMA).to_batch([{"uid": "u", "user_id": 42.0, "opportunity_ids": [1.0, 2]}])
    assert batch.column("user_id").to_pylist() == [42]
    assert batch.column("opportunity_ids").to_pylist() == [[1, 2]]


def test_unknown_fields_go_to_extra_as_sorted_json() -> None:
    converter = RecordConverter(ACTIVITY_SCHEMA)
    batch = converter.to_batch(
        [
            activity(1, zeta={"nested": [1, 2]}, alpha="é"),
            activity(2),
            activity(3, _extra="sent by the API"),
        ]
    )
    assert batch.column("_extra").to_pylist() == [
        '{"alpha":"é","zeta":{"nested":[1,2]}}',
        None,
        '{"_extra":"sent by the API"}',
    ]
    converter.to_batch([{"uid": "x", "later": 1}])
    assert converter.unknown_fields == {"alpha", "zeta", "_extra", "later"}


def test_participants_convert_with_their_own_schema() -> None:
    record = {
        "activity_uid": "act-1",
        "id": 9,
        "email": "a@example.com",
        "activity_timestamp": "2026-11-01T00:00:00Z",
        "duration": 60,
        "deleted": False,
    }
    batch = RecordConverter(PARTICIPANT_SCHEMA, id_field="activity_uid").to_batch([record])
    assert batch.schema == PARTICIPANT_SCHEMA
    row = batch.to_pylist()[0]
    assert row["activity_timestamp"] == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert row["duration"] == 60


def test_no_records_give_an_empty_batch() -> None:
    batch = RecordConverter(ACTIVITY_SCHEMA).to_batch([])
    assert batch.num_rows == 0
    assert batch.schema == ACTIVITY_SCHEMA


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("user_id", "abc", "'abc'"),
        ("user_id", 1.5, "1.5"),
        ("user_id", True, "True"),
        ("user_id", 2**63, str(2**63)),
        ("duration", "90", "'90'"),
        ("duration", True, "True"),
        ("is_partner", 1, "1"),
        ("is_partner", "false", "'false'"),
        ("crm_id", 12345, "12345"),
        ("opportunity_ids", 7, "7"),
        ("opportunity_crm_ids", "006A", "'006A'"),
        ("opportunity_ids", [1, "2"], "[1, '2']"),
        ("timestamp", "yesterday", "'yesterday'"),
        ("timestamp", True, "True"),
    ],
)
def test_a_value_that_does_not_fit_names_field_record_and_value(field: str, value: Any, shown: str) -> None:
    records = [activity(1), activity(2, **{field: value}), activity(3)]
    with pytest.raises(SchemaMismatchError) as raised:
        RecordConverter(ACTIVITY_SCHEMA).to_batch(records)
    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert repr(field) in message
    assert "uid='act-0-000002'" in message
    assert shown in message
    assert raised.value.field == field and raised.value.record_id == "act-0-000002"


def test_mismatch_message_truncates_long_values_and_uses_the_id_field() -> None:
    with pytest.raises(SchemaMismatchError) as raised:
        RecordConverter(PARTICIPANT_SCHEMA, id_field="activity_uid").to_batch(
            [{"activity_uid": "act-9", "name": ["x" * 10_000]}]
        )
    message = str(raised.value)
    assert "activity_uid='act-9'" in message and "'name'" in message
    assert "..." in message and len(message) < 1000


def test_conversion_is_columnar_fast() -> None:
    """Guards against a slow path sneaking into the common case (the measured rate is far higher)."""
    import time

    pages = [[activity(i, day=0) for i in range(page * 1000, page * 1000 + 1000)] for page in range(5)]
    converter = RecordConverter(ACTIVITY_SCHEMA)
    started = time.perf_counter()
    for page in pages:
        converter.to_batch(page)
    assert 5000 / (time.perf_counter() - started) > 20_000


# ============================================================================================
# PartitionedParquetWriter
# ============================================================================================


def test_written_partitions_read_back_as_one_table_with_the_documented_schema(tmp_path: Path) -> None:
    records = [activity(i, day=i % 2) for i in range(600)]
    files = write_activities(local(tmp_path), records, page_size=250)
    assert sorted(files) == [f"activity_type={t}/activity_date=2026-11-0{d}" for t in sorted(TYPES) for d in (1, 2)]
    assert (tmp_path / "activity_type=email/activity_date=2026-11-01/part-00000.parquet").is_file()

    table = hive_dataset(str(tmp_path)).to_table()
    assert table.schema.names == [*ACTIVITY_SCHEMA.names, "activity_date"]
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert table.num_rows == 600 == sum(info.rows for infos in files.values() for info in infos)
    rows = {row["uid"]: row for row in table.to_pylist()}
    expected = RecordConverter(ACTIVITY_SCHEMA).to_batch(records).to_pylist()
    for original in expected:
        row = rows[original["uid"]]
        assert row["activity_date"] == row["timestamp"].date().isoformat()
        assert {key: row[key] for key in original} == original
    for partition, infos in files.items():
        for info in infos:
            path = tmp_path / partition / info.name
            assert info.bytes == path.stat().st_size
            assert pq.read_metadata(path).num_rows == info.rows
            assert "activity_type" not in pq.read_schema(path).names  # partition columns live in the path only


def test_a_partition_without_rows_gets_a_zero_row_file_with_the_schema(tmp_path: Path) -> None:
    records = [activity(i, day=0, activity_type="email") for i in range(10)]
    files = write_activities(local(tmp_path), records)
    empty = "activity_type=call/activity_date=2026-11-02"
    assert [(info.name, info.rows) for info in files[empty]] == [("part-00000.parquet", 0)]
    path = tmp_path / empty / "part-00000.parquet"
    assert pq.read_metadata(path).num_rows == 0
    assert pq.read_schema(path).names == ACTIVITY_FILE_SCHEMA.names
    inferred = ds.dataset(str(tmp_path / "activity_type=call"), format="parquet", partitioning="hive")
    assert inferred.schema.names == [*ACTIVITY_FILE_SCHEMA.names, "activity_date"]
    assert inferred.to_table().num_rows == 0


def test_same_input_gives_byte_identical_files(tmp_path: Path) -> None:
    records = [activity(i, day=i % 2, unknown_field=i) for i in range(2500)]
    options = {"row_group_size": 300, "max_rows_per_file": 700}
    first = write_activities(local(tmp_path / "a"), records, **options)
    second = write_activities(local(tmp_path / "b"), records, **options)
    assert first == second
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    # Pages cut differently (no buffer cap reached): same rows, same row groups, same bytes.
    write_activities(local(tmp_path / "c"), records, page_size=333, **options)
    assert digests(tmp_path / "c") == digests(tmp_path / "a")


def test_a_finished_partition_is_written_and_closed_at_once_with_the_same_bytes(tmp_path: Path) -> None:
    """``finish_partition`` writes the buffered tail now (the file is complete on disk, its
    buffer freed); the bytes are those :meth:`close` would have written; a later write starts the
    next file.
    """
    converter = RecordConverter(ACTIVITY_SCHEMA)
    batch = converter.to_batch([activity(i, day=0, activity_type="email") for i in range(500)]).drop_columns(["activity_type"])
    options = {"row_group_size": 200, "max_buffered_rows": 1000}
    plain = PartitionedParquetWriter(local(tmp_path / "a"), ACTIVITY_FILE_SCHEMA, **options)
    plain.write("day=1", batch)
    plain.close()
    finishing = PartitionedParquetWriter(local(tmp_path / "b"), ACTIVITY_FILE_SCHEMA, **options)
    finishing.write("day=1", batch)
    assert finishing.buffered_rows == 100
    finishing.finish_partition("day=1")
    assert finishing.buffered_rows == 0
    assert pq.ParquetFile(tmp_path / "b" / "day=1" / "part-00000.parquet").metadata.num_rows == 500  # complete now
    assert digests(tmp_path / "b") == digests(tmp_path / "a")
    finishing.write("day=1", batch.slice(0, 10))
    files = finishing.close()
    assert [(f.name, f.rows) for f in files["day=1"]] == [("part-00000.parquet", 500), ("part-00001.parquet", 10)]


def test_files_roll_at_max_rows_per_file(tmp_path: Path) -> None:
    records = [activity(i, day=0, activity_type="email") for i in range(1000)]
    files = write_activities(local(tmp_path), records, page_size=128, row_group_size=100, max_rows_per_file=300)
    infos = files["activity_type=email/activity_date=2026-11-01"]
    assert [(info.name, info.rows) for info in infos] == [
        ("part-00000.parquet", 300),
        ("part-00001.parquet", 300),
        ("part-00002.parquet", 300),
        ("part-00003.parquet", 100),
    ]
    directory = tmp_path / "activity_type=email/activity_date=2026-11-01"
    assert sorted(path.name for path in directory.iterdir()) == [info.name for info in infos]
    groups = [pq.read_metadata(directory / info.name).row_group(i).num_rows for info in infos for i in range(3 if info.rows == 300 else 1)]
    assert groups == [100] * 10
    uids = pq.read_table(directory).column("uid").to_pylist()
    assert uids == [record["uid"] for record in records]  # row order kept across files


def test_buffering_is_bounded_with_a_year_of_partitions(tmp_path: Path) -> None:
    cap = 300
    writer = PartitionedParquetWriter(local(tmp_path), ACTIVITY_FILE_SCHEMA, row_group_size=200, max_buffered_rows=cap)
    converter = RecordConverter(ACTIVITY_SCHEMA)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    plan = plan_partitions(start, start + timedelta(days=365), "day")
    open_fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    peak, total = 0, 0
    for page in range(2):
        records = [activity(i, day=(i * 7 + page) % 365 - 304) for i in range(page * 1000, page * 1000 + 1000)]
        for partition, rows in plan.split(converter.to_batch(records), "timestamp", "activity_type"):
            writer.write(partition, rows.drop_columns(["activity_type"]))
            peak = max(peak, writer.buffered_rows)
            total += rows.num_rows
        if open_fds is not None:
            assert len(os.listdir("/proc/self/fd")) <= open_fds + 2  # no file kept open per partition
    for partition in plan.owned():
        writer.ensure_partition(partition)
    files = writer.close()
    assert peak <= cap
    assert len(files) == 365 * 3
    assert sum(info.rows for infos in files.values() for info in infos) == total == 2000
    assert hive_dataset(str(tmp_path)).count_rows() == 2000


def test_sub_daily_interval_layout(tmp_path: Path) -> None:
    start = datetime(2026, 11, 1, 0, tzinfo=timezone.utc)
    plan = plan_partitions(start, start + timedelta(hours=1), "interval")
    writer = PartitionedParquetWriter(local(tmp_path), ACTIVITY_FILE_SCHEMA)
    batch = RecordConverter(ACTIVITY_SCHEMA).to_batch([activity(i, timestamp=NOV_1_MS + i * 1000) for i in range(30)])
    for partition, rows in plan.split(batch, "timestamp", "activity_type"):
        writer.write(partition, rows.drop_columns(["activity_type"]))
    files = writer.close()
    assert sorted(files) == [
        f"activity_type={t}/activity_date=2026-11-01/interval=20261101T0000Z_20261101T0100Z" for t in sorted(TYPES)
    ]
    table = ds.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 30
    assert set(table.column("interval").to_pylist()) == {"20261101T0000Z_20261101T0100Z"}


def test_writer_rejects_bad_partitions_schemas_and_sizes(tmp_path: Path) -> None:
    writer = PartitionedParquetWriter(local(tmp_path), ACTIVITY_FILE_SCHEMA)
    empty = ACTIVITY_FILE_SCHEMA.empty_table().to_batches() or [pa.RecordBatch.from_pylist([], schema=ACTIVITY_FILE_SCHEMA)]
    for bad in ["", "/abs=1", "../up=1", "activity_date=2026-11-01/", "_staging/x=1", "plain", "a=1//b=2", ".hidden=1"]:
        with pytest.raises(ValueError, match="partition"):
            writer.write(bad, empty[0])
    with_type = RecordConverter(ACTIVITY_SCHEMA).to_batch([activity(1)])
    with pytest.raises(ValueError, match="partition columns must be dropped"):
        writer.write("activity_date=2026-11-01", with_type)
    writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.ensure_partition("activity_date=2026-11-01")
    for option in ("row_group_size", "max_rows_per_file", "max_buffered_rows"):
        with pytest.raises(ValueError, match=option):
            PartitionedParquetWriter(local(tmp_path), ACTIVITY_FILE_SCHEMA, **{option: 0})


@pytest.mark.s3
def test_writer_on_s3_uploads_complete_files_and_leaves_no_spool(
    s3_root: ObjectStoragePath, moto_s3: MotoS3, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    records = [activity(i, day=i % 2) for i in range(400)]
    files = write_activities(s3_root, records, row_group_size=50, max_rows_per_file=90, spool_dir=str(spool))
    assert list(spool.iterdir()) == []
    prefix = s3_root.path.split("/", 1)[1]
    keys = moto_s3.keys(prefix + "/")
    assert keys == sorted(f"{prefix}/{partition}/{info.name}" for partition, infos in files.items() for info in infos)
    table = hive_dataset(s3_root.path, filesystem=s3_root.fs).to_table()
    assert table.num_rows == 400
    # Same bytes as on the local filesystem.
    local_files = write_activities(local(tmp_path / "local"), records, row_group_size=50, max_rows_per_file=90)
    assert local_files == files
    partition, infos = next(iter(files.items()))
    remote = s3_root.fs.cat_file((s3_root / partition / infos[-1].name).path)
    assert remote == (tmp_path / "local" / partition / infos[-1].name).read_bytes()


@pytest.mark.parametrize(
    "schema, plain",
    [(ACTIVITY_SCHEMA, ACTIVITY_PER_RECORD_FIELDS), (PARTICIPANT_SCHEMA, frozenset()), (RAW_ACTIVITY_SCHEMA, RAW_ACTIVITY_PER_RECORD_FIELDS)],
    ids=["activities", "participants", "raw"],
)
def test_dictionary_columns_name_the_parquet_leaves_of_every_other_field(schema: pa.Schema, plain: frozenset[str], tmp_path: Path) -> None:
    assert plain <= set(schema.names)
    pq.write_table(pa.Table.from_pylist([], schema=schema), tmp_path / "empty.parquet")
    leaves = [column.path for column in pq.ParquetFile(tmp_path / "empty.parquet").schema]
    kept = [leaf for leaf in leaves if leaf.split(".")[0] not in plain]
    assert dictionary_columns(schema, plain) == kept and len(kept) == len(leaves) - len(plain)


def test_per_record_fields_are_written_without_dictionary_the_others_with(tmp_path: Path) -> None:
    """Identifiers and millisecond timestamps (unique per record) gain nothing from a dictionary."""
    records = [activity(index, opportunity_crm_ids=["006A", "006B"]) for index in range(2_000)]
    write_activities(local(tmp_path), records, days=1, plain_columns=ACTIVITY_PER_RECORD_FIELDS)
    path = next(tmp_path.rglob("activity_type=email/*/part-00000.parquet"))
    metadata = pq.ParquetFile(path).metadata.row_group(0)
    encodings = {metadata.column(i).path_in_schema: metadata.column(i).encodings for i in range(metadata.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["uid"] and "RLE_DICTIONARY" not in encodings["timestamp"]
    assert "RLE_DICTIONARY" in encodings["user_id"] and "RLE_DICTIONARY" in encodings["opportunity_crm_ids.list.element"]


def test_partitions_finished_in_parallel_give_the_same_bytes_as_one_by_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``close`` encodes the partitions' last row groups in one thread per CPU: the files do not change."""
    import airflow_provider_activities.storage.writer as parquet_module

    records = [activity(index, day=index % 3) for index in range(3_000)]
    runs = {}
    for cpus in (1, 4):
        monkeypatch.setattr(parquet_module, "usable_cpus", lambda cpus=cpus: cpus)
        out = tmp_path / f"cpus-{cpus}"
        files = write_activities(local(out), records, days=3, row_group_size=400, max_rows_per_file=700)
        runs[cpus] = (files, digests(out))
    assert runs[1] == runs[4]
    assert len(runs[1][0]) == 9 and sum(len(files) > 1 for files in runs[1][0].values()) >= 3  # rolls at close too
