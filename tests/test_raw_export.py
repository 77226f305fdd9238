"""raw_export: sandbox export records into the nested RAW_ACTIVITY_SCHEMA exactly (every nested
field), unknown fields to ``_extra`` by path, type errors naming path and uid; the day spool on
disk giving the same days as memory; de-duplication independent of file order; bounds.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_activities.export.spool import (
    DAY_COLUMN,
    SEQUENCE_COLUMN,
    DaySpool,
    RawExportBuffer,
    RawRecordConverter,
    deduplicate,
    spool_schema,
)
from airflow_provider_activities.records.convert import SchemaMismatchError
from airflow_provider_activities.records.schemas import EXTRA_FIELD, RAW_ACTIVITY_SCHEMA
from airflow_provider_activities.testing._export import ExportSettings
from airflow_provider_activities.testing.sandbox import Sandbox

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
DAY_MS = 86_400_000
FIRST, LAST = date(2026, 11, 2), date(2026, 11, 3)


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    """The sandbox's data and ground truth (no server needed: records are made in process)."""
    return Sandbox(seed=13, activities=800, start=START, days=4)


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    sandbox.export.settings = ExportSettings()
    yield sandbox
    sandbox.export.settings = ExportSettings()


def day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def expected_value(value: Any, type_: pa.DataType) -> Any:
    """What a JSON value of the export reads as in Python from Arrow, per the vendor's schema."""
    if value is None:
        return None
    if pa.types.is_timestamp(type_):
        if isinstance(value, int):
            return datetime.fromtimestamp(value / 1000, UTC)
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    if pa.types.is_date32(type_):
        return date.fromisoformat(value)
    if pa.types.is_list(type_):
        return [expected_value(item, type_.value_type) for item in value]
    if pa.types.is_struct(type_):
        return {f.name: expected_value(value.get(f.name), f.type) for f in type_}
    return value


def as_rows(table: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    return table.to_pylist()


def convert(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_batches([RawRecordConverter().to_batch(records)])


# -- conversion -----------------------------------------------------------------------------------


class TestConverter:
    @pytest.mark.parametrize("timestamp_format", ["iso", "mixed", "epoch_ms"])
    def test_every_field_round_trips(self, sb: Sandbox, tmp_path: Path, timestamp_format: str) -> None:
        sb.export.settings.timestamp_format = timestamp_format
        records = sb.export_file_records(FIRST, LAST, "snapshot")
        converter = RawRecordConverter()
        batch = converter.to_batch(records)
        assert batch.schema.equals(RAW_ACTIVITY_SCHEMA, check_metadata=True)
        assert batch.num_rows == len(records) > 100
        rows = batch.to_pylist()
        for record, row in zip(records, rows):
            for field in RAW_ACTIVITY_SCHEMA:
                if field.name == EXTRA_FIELD:
                    continue
                assert row[field.name] == expected_value(record.get(field.name), field.type), (record["uid"], field.name)
            extra = {"account": record["account"]} if "account" in record else None
            assert (json.loads(row[EXTRA_FIELD]) if row[EXTRA_FIELD] else None) == extra
        assert converter.unknown_fields == {"account"}
        # The data covers the nested shapes (else the comparison above proves little).
        participants = [p for row in rows for p in row["participants"]]
        assert any(p["team"] and p["team"]["team_name"] for p in participants)
        assert any(p["team"] is None and p["matched_as"] == "contact" for p in participants)
        campaigns = [c for row in rows for c in row["campaigns"]]
        assert any(c["end_date"] is None for c in campaigns) and any(isinstance(c["start_date"], date) for c in campaigns)
        assert any(row["internal_match_status"] for row in rows) and any(row["crm_status"]["push_time"] for row in rows)
        assert any(row["attachment_file_names"] for row in rows) and any(row["tags"] for row in rows)
        assert {row["type"] for row in rows} == {"email", "meeting", "call"}
        assert any(row["stats"]["participants_on_to_line"] is not None for row in rows)
        assert any(row["stats"]["accepted_participants"] is not None for row in rows)
        # Parquet keeps the nested schema and the values.
        pq.write_table(pa.Table.from_batches([batch]), tmp_path / "raw.parquet")
        back = pq.read_table(tmp_path / "raw.parquet")
        assert back.schema.equals(RAW_ACTIVITY_SCHEMA) and back.to_pylist() == rows

    def test_timestamp_forms(self) -> None:
        moment = datetime(2026, 11, 1, 3, 4, 5, tzinfo=UTC)
        ms = int(moment.timestamp() * 1000)
        forms = ["2026-11-01T03:04:05Z", "2026-11-01T05:04:05+02:00", "2026-10-31T22:04:05-05:00", ms, "2026-11-01T03:04:05.000Z"]
        records = [{"uid": str(i), "timestamp": form, "crm_status": {"push_time": form}} for i, form in enumerate(forms)]
        rows = as_rows(convert(records))
        assert [row["timestamp"] for row in rows] == [moment] * len(forms)
        assert [row["crm_status"]["push_time"] for row in rows] == [moment] * len(forms)
        millis = as_rows(convert([{"uid": "m", "timestamp": "2026-11-01T03:04:05.123Z"}]))[0]["timestamp"]
        assert millis == datetime(2026, 11, 1, 3, 4, 5, 123000, tzinfo=UTC)
        table = convert(records)
        assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
        assert table.column("timestamp").cast(pa.int64()).to_pylist() == [ms] * len(forms)

    def test_missing_fields_are_null_and_empty_lists_stay_empty(self) -> None:
        row = as_rows(convert([{"uid": "u", "tags": [], "participants": [{"name": "A"}], "stats": {}}]))[0]
        assert row["tags"] == [] and row["campaigns"] is None and row["subject"] is None
        assert row["participants"][0]["name"] == "A" and row["participants"][0]["team"] is None
        assert row["stats"] == {f.name: None for f in RAW_ACTIVITY_SCHEMA.field("stats").type}
        assert row[EXTRA_FIELD] is None

    def test_unknown_fields_to_extra_by_path(self) -> None:
        record = {
            "uid": "u1",
            "account": {"crm_id": "001", "name": "Acme"},
            "crm_status": {"pushed": True, "new_key": 1},
            "participants": [{"name": "A"}, {"name": "B", "badge": "x", "team": {"team_name": "T", "region": "EU"}}],
            "campaigns": [{"crm_id": "7015", "budget": 10}],
            "stats": {"total_participants": 2, "bots": 0},
        }
        converter = RawRecordConverter()
        row = as_rows(converter.to_batch([record, {"uid": "u2"}]))
        assert json.loads(row[0][EXTRA_FIELD]) == {
            "account": {"crm_id": "001", "name": "Acme"},
            "crm_status.new_key": 1,
            "participants[1].badge": "x",
            "participants[1].team.region": "EU",
            "campaigns[0].budget": 10,
            "stats.bots": 0,
        }
        assert row[0][EXTRA_FIELD] == json.dumps(json.loads(row[0][EXTRA_FIELD]), sort_keys=True, separators=(",", ":"))
        assert row[1][EXTRA_FIELD] is None
        assert row[0]["participants"][1]["team"] == {"crm_id": None, "team_name": "T", "parent_team_crm_id": None}
        assert converter.unknown_fields == {
            "account", "crm_status.new_key", "participants[].badge", "participants[].team.region", "campaigns[].budget", "stats.bots",
        }  # fmt: skip

    @pytest.mark.parametrize(
        "changes, path, value",
        [
            ({"participants": [{"name": "A"}, {"time_spent": "long"}]}, "participants[1].time_spent", "long"),
            ({"participants": [{"team": "Sales"}]}, "participants[0].team", "Sales"),
            ({"participants": {"name": "A"}}, "participants", {"name": "A"}),
            ({"tags": "renewal"}, "tags", "renewal"),
            ({"tags": ["a", 3]}, "tags[1]", 3),
            ({"attachment_file_names": [None, {"f": 1}]}, "attachment_file_names[1]", {"f": 1}),
            ({"stats": {"total_participants": "3"}}, "stats.total_participants", "3"),
            ({"stats": {"total_participants": 2.5}}, "stats.total_participants", 2.5),
            ({"campaigns": [{"start_date": "soon"}]}, "campaigns[0].start_date", "soon"),
            ({"crm_status": []}, "crm_status", []),
            ({"crm_status": {"pushed": "yes"}}, "crm_status.pushed", "yes"),
            ({"internal_match_status": {"push_time": "yesterday"}}, "internal_match_status.push_time", "yesterday"),
            ({"timestamp": True}, "timestamp", True),
            ({"ingest_timestamp": "2026-13-45T00:00:00Z"}, "ingest_timestamp", "2026-13-45T00:00:00Z"),
            ({"reply_received": "yes"}, "reply_received", "yes"),
            ({"duration": 2**70}, "duration", 2**70),
            ({"subject": 42}, "subject", 42),
        ],
    )
    def test_wrong_types_name_the_path_and_uid(self, changes: dict[str, Any], path: str, value: Any) -> None:
        good = {"uid": "fine", "timestamp": "2026-11-01T00:00:00Z"}
        with pytest.raises(SchemaMismatchError) as caught:
            RawRecordConverter().to_batch([good, {**good, "uid": "bad-uid-7", **changes}])
        assert caught.value.field == path and caught.value.record_id == "bad-uid-7" and caught.value.value == value
        assert path in str(caught.value) and "bad-uid-7" in str(caught.value)

    def test_integral_floats_and_day_forms_accepted(self) -> None:
        row = as_rows(
            convert([{"uid": "u", "duration": 60.0, "campaigns": [{"start_date": "2026-11-01T10:00:00Z", "end_date": "2026-11-30"}]}])
        )[0]
        assert row["duration"] == 60 and type(row["duration"]) is int
        assert row["campaigns"][0]["start_date"] == date(2026, 11, 1) and row["campaigns"][0]["end_date"] == date(2026, 11, 30)


# -- spool, bounds and de-duplication -------------------------------------------------------------


def run_buffer(
    records: list[dict[str, Any]],
    directory: Path,
    time_column: str,
    max_buffered_rows: int,
    batch_size: int = 37,
) -> tuple[dict[date, pa.Table], RawExportBuffer, int]:
    """Feed ``records`` in batches; the days, the buffer, and the most rows it held after an add."""
    directory.mkdir()
    buffer = RawExportBuffer(str(directory), time_column, day_ms(FIRST), day_ms(LAST) + DAY_MS, max_buffered_rows=max_buffered_rows)
    most = 0
    for i in range(0, len(records), batch_size):
        buffer.add(records[i : i + batch_size])
        most = max(most, buffer.spool.buffered_rows)
    days = dict(buffer.days())
    buffer.close()
    return days, buffer, most


def truth_by_day(sb: Sandbox, export_type: str) -> dict[date, pa.Table]:
    """The sandbox's ground truth, converted, split by the UTC day of the export's time field."""
    expected = sb.expected_export_records(FIRST, LAST, export_type)
    table = convert(expected)
    column = "timestamp" if export_type == "snapshot" else "ingest_timestamp"
    out: dict[date, list[int]] = {}
    for index, moment in enumerate(table.column(column).to_pylist()):
        out.setdefault(moment.date(), []).append(index)
    return {day: table.take(pa.array(indexes)) for day, indexes in out.items()}


class TestBuffer:
    @pytest.mark.parametrize("export_type", ["snapshot", "delta"])
    def test_file_to_ground_truth(self, sb: Sandbox, tmp_path: Path, export_type: str) -> None:
        sb.export.settings.stale_duplicates = True
        sb.export.settings.spill_days = 1
        sb.export.settings.timestamp_format = "mixed"
        records = sb.export_file_records(FIRST, LAST, export_type)
        column = "timestamp" if export_type == "snapshot" else "ingest_timestamp"
        days, buffer, _ = run_buffer(records, tmp_path / "spool", column, 10**9)
        truth = truth_by_day(sb, export_type)
        assert list(days) == [FIRST, LAST] == sorted(truth)
        for day, table in days.items():
            assert table.schema.equals(RAW_ACTIVITY_SCHEMA)
            assert table.to_pylist() == truth[day].to_pylist(), day
        low, high = day_ms(FIRST), day_ms(LAST) + DAY_MS
        outside = sum(
            1 for r in records if not low <= int(convert([r]).column(column).cast(pa.int64())[0].as_py()) < high
        )
        assert outside > 0 and buffer.counts.outside == outside
        assert buffer.counts.received == len(records)
        kept = sum(t.num_rows for t in days.values())
        assert buffer.counts.duplicates == len(records) - outside - kept > 0

    def test_spilling_gives_the_same_days_as_memory(self, sb: Sandbox, tmp_path: Path) -> None:
        sb.export.settings.stale_duplicates = True
        sb.export.settings.spill_days = 1
        records = sb.export_file_records(FIRST, LAST, "snapshot")
        in_memory, memory_buffer, _ = run_buffer(records, tmp_path / "memory", "timestamp", 10**9)
        spilled, spill_buffer, most = run_buffer(records, tmp_path / "spill", "timestamp", 50)
        assert memory_buffer.spool.rounds == 1
        assert spill_buffer.spool.rounds >= 5
        assert most < 50  # never more than the cap held after an add
        assert len(list((tmp_path / "spill").glob("round-*.arrow"))) == spill_buffer.spool.rounds
        assert list(in_memory) == list(spilled)
        for day in in_memory:
            assert spilled[day].equals(in_memory[day]), day
        assert spill_buffer.counts == memory_buffer.counts

    def test_result_independent_of_file_order(self, sb: Sandbox, tmp_path: Path) -> None:
        sb.export.settings.stale_duplicates = True
        records = sb.export_file_records(FIRST, LAST, "snapshot")
        shuffled = list(records)
        random.Random(4).shuffle(shuffled)
        reversed_ = records[::-1]
        outcomes = [run_buffer(r, tmp_path / name, "timestamp", 64)[0] for name, r in (("a", records), ("b", shuffled), ("c", reversed_))]
        for other in outcomes[1:]:
            assert list(other) == list(outcomes[0])
            for day in other:
                assert other[day].equals(outcomes[0][day])
        kept = [row for table in outcomes[0].values() for row in table.to_pylist()]
        reprocessed = [row for row in kept if "reprocessed" in row["tags"]]
        assert reprocessed and len({row["uid"] for row in kept}) == len(kept)

    def test_a_batch_over_the_cap_is_written_out_at_once(self, sb: Sandbox, tmp_path: Path) -> None:
        records = sb.export_file_records(FIRST, LAST, "snapshot")
        buffer = RawExportBuffer(str(tmp_path), "timestamp", day_ms(FIRST), day_ms(LAST) + DAY_MS, max_buffered_rows=10)
        buffer.add(records)
        assert buffer.spool.buffered_rows == 0 and buffer.spool.rounds == 1
        buffer.add([])
        assert buffer.spool.rounds == 1
        assert sum(t.num_rows for _, t in buffer.days()) == len(records)


    def test_day_batches_give_the_days_rows_in_small_batches_from_a_byte_capped_spool(self, sb: Sandbox, tmp_path: Path) -> None:
        sb.export.settings.stale_duplicates = True
        sb.export.settings.spill_days = 1
        records = sb.export_file_records(FIRST, LAST, "snapshot")
        reference, reference_buffer, _ = run_buffer(records, tmp_path / "reference", "timestamp", 10**9)
        buffer = RawExportBuffer(
            str(tmp_path), "timestamp", day_ms(FIRST), day_ms(LAST) + DAY_MS, max_buffered_bytes=64 * 1024
        )
        for i in range(0, len(records), 40):
            buffer.add(records[i : i + 40])
            assert buffer.spool._buffered_bytes < 64 * 1024
        assert buffer.spool.rounds >= 3  # the byte cap, not the row cap, spilled
        batches = {day: list(chunks) for day, chunks in buffer.day_batches(chunk_rows=7)}
        assert list(batches) == list(reference)
        for day, chunks in batches.items():
            assert max(batch.num_rows for batch in chunks) <= 7
            assert pa.Table.from_batches(chunks).equals(reference[day]), day
        assert buffer.counts == reference_buffer.counts


def spool_batch(uids: list[str | None], ingests: list[int | None], days: list[int], first_seq: int = 0) -> pa.RecordBatch:
    """A minimal spool batch: uid, timestamp, ingest_timestamp plus the helper columns."""
    schema = spool_schema(pa.schema([("uid", pa.string()), ("timestamp", pa.timestamp("ms", tz="UTC")), ("ingest_timestamp", pa.timestamp("ms", tz="UTC"))]))
    n = len(uids)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(uids, pa.string()),
            pa.array([d * DAY_MS + 1000 * i for i, d in enumerate(days)], pa.timestamp("ms", tz="UTC")),
            pa.array(ingests, pa.timestamp("ms", tz="UTC")),
            pa.array(days, pa.int32()),
            pa.array(range(first_seq, first_seq + n), pa.int64()),
        ],
        schema=schema,
    )


class TestDedupAndSpool:
    def test_latest_ingest_wins_then_later_arrival(self) -> None:
        batch = spool_batch(["a", "b", "a", "a", "b", None, None], [5, 1, 9, 9, 2, 3, None], [0] * 7)
        kept, dropped = deduplicate(pa.Table.from_batches([batch]), "timestamp")
        assert dropped == 3
        rows = kept.to_pylist()
        # "a": seq 2 and 3 tie on the latest ingest, the later arrival wins; ordered by timestamp.
        assert [(r["uid"], r[SEQUENCE_COLUMN]) for r in rows] == [("a", 3), ("b", 4), (None, 5), (None, 6)]

    def test_null_ingest_loses(self) -> None:
        batch = spool_batch(["a", "a"], [7, None], [0, 0])
        kept, dropped = deduplicate(pa.Table.from_batches([batch]), "timestamp")
        assert dropped == 1 and kept.column(SEQUENCE_COLUMN).to_pylist() == [0]

    def test_small_tables(self) -> None:
        batch = spool_batch(["a"], [1], [0])
        table = pa.Table.from_batches([batch])
        assert deduplicate(table, "timestamp") == (table, 0)
        assert deduplicate(table.slice(0, 0), "timestamp")[1] == 0

    def test_spool_rounds_and_days(self, tmp_path: Path) -> None:
        spool = DaySpool(str(tmp_path), spool_batch(["x"], [1], [0]).schema, max_buffered_rows=4)
        seq = 0
        for days in ([3, 1, 3], [2, 1], [3], [5, 1, 1, 2], [6]):
            spool.add(spool_batch([f"u{seq + i}" for i in range(len(days))], [1] * len(days), days, seq))
            seq += len(days)
            assert spool.buffered_rows < 4
        assert spool.rounds == 2 and spool.buffered_rows == 1
        assert spool.days() == [1, 2, 3, 5, 6] and spool.rounds == 3 and spool.buffered_rows == 0
        assert spool.read_day(1).column(SEQUENCE_COLUMN).to_pylist() == [1, 4, 7, 8]
        assert spool.read_day(3).column("uid").to_pylist() == ["u0", "u2", "u5"]
        assert spool.read_day(4).num_rows == 0 and spool.read_day(4).schema.equals(spool.schema)
        assert set(spool.read_day(3).column(DAY_COLUMN).to_pylist()) == {3}
        spool.close()
        assert spool.buffered_rows == 0

    def test_rounds_past_the_plain_budget_are_compressed_and_read_back_the_same(self, tmp_path: Path) -> None:
        """The first rounds are written uncompressed (a copy), those past ``plain_bytes`` with LZ4."""
        schema = spool_batch(["x"], [1], [0]).schema
        rows = [spool_batch([f"u{seq}", f"v{seq}"], [1, 2], [seq % 3, 2], 2 * seq) for seq in range(6)]
        plain = DaySpool(str(tmp_path / "plain"), schema, max_buffered_rows=2)
        mixed = DaySpool(str(tmp_path / "mixed"), schema, max_buffered_rows=2, plain_bytes=rows[0].nbytes * 2)
        for spool in (plain, mixed):
            os.makedirs(spool.directory)
            for batch in rows:
                spool.add(batch)
        assert plain.days() == mixed.days() == [0, 1, 2]
        for day in (0, 1, 2):
            assert mixed.read_day(day).equals(plain.read_day(day))
        compressed = [_round_is_compressed(os.path.join(mixed.directory, name)) for name in sorted(os.listdir(mixed.directory))]
        assert compressed == [False, False, True, True, True, True]
        assert not any(_round_is_compressed(os.path.join(plain.directory, name)) for name in os.listdir(plain.directory))
        plain.close()
        mixed.close()

    @pytest.mark.parametrize("plain_bytes", [1 << 40, 0], ids=["plain", "compressed"])
    def test_reading_a_days_key_columns_leaves_its_other_columns_on_disk(self, tmp_path: Path, plain_bytes: int) -> None:
        """A day's key columns are read without its nested data: memory does not hold the day's rows."""
        rows = 20_000
        base = spool_batch([f"u{i}" for i in range(rows)], [1] * rows, [i % 2 for i in range(rows)])
        wide = pa.RecordBatch.from_arrays(
            [*base.columns[:3], pa.array(["x" * 500] * rows), *base.columns[3:]],
            schema=base.schema.insert(3, pa.field("body", pa.string())),
        )  # 10 MB of text beside the keys
        spool = DaySpool(str(tmp_path), wide.schema, plain_bytes=plain_bytes)
        spool.add(wide)
        spool.days()
        before = pa.total_allocated_bytes()
        keys = spool.read_day(1, ["uid", "ingest_timestamp", SEQUENCE_COLUMN])
        assert keys.num_rows == rows // 2 and keys.column("uid")[0].as_py() == "u1"
        assert pa.total_allocated_bytes() - before < 2_000_000  # the keys: about 0.3 MB; the day's bodies: 5 MB
        spool.close()

    def test_a_round_the_spool_thread_cannot_write_fails_the_next_read(self, tmp_path: Path) -> None:
        """Rounds are written by a thread of their own: its error is raised to the caller, not lost."""
        missing = tmp_path / "gone"
        before = set(threading.enumerate())
        spool = DaySpool(str(missing), spool_batch(["x"], [1], [0]).schema, max_buffered_rows=2)
        spool.add(spool_batch(["u0", "u1"], [1, 1], [3, 4]))  # a round, handed to the spool's thread
        with pytest.raises(OSError):
            spool.days()
        spool.close()
        assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("peopleai-spool")]



def _round_is_compressed(path: str) -> bool:
    """Whether a spool round file differs from its batches written again uncompressed."""
    with pa.OSFile(path, "rb") as source:
        reader = pa.ipc.open_file(source)
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        schema = reader.schema
        written = open(path, "rb").read()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return written != sink.getvalue().to_pybytes()
