"""Export files read with Arrow where exact (issue 16): the same Parquet bytes whichever way each
record was read, de-duplication across the days of a snapshot, byte-identical reruns.

The identity tests write real Parquet files from crafted and randomly generated export files
that mix what Arrow's reader takes and what it must leave to the Python rules (timestamp forms,
unknown keys, integral floats, escapes, blank lines ...), once with Arrow and once with every
record read the Python way, and compare the files' bytes. The de-duplication tests run the
operator against the sandbox, serving it a crafted file through the sandbox's ``redirect_url``
knob and a loopback file host.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import random
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_provider_activities.api.errors import PeopleAIError
from airflow_provider_activities.compat import ObjectStoragePath
from airflow_provider_activities.export.days import write_days
from airflow_provider_activities.export.files import ExportBlock, ExportFileError
from airflow_provider_activities.export.lines import RawLinesConverter
from airflow_provider_activities.export.spool import RawExportBuffer
from airflow_provider_activities.operators.export import PeopleAIExportActivitiesToParquetOperator
from airflow_provider_activities.records.convert import RawRecordConverter, SchemaMismatchError
from airflow_provider_activities.records.schemas import RAW_ACTIVITY_PER_RECORD_FIELDS, RAW_ACTIVITY_SCHEMA
from airflow_provider_activities.storage.writer import PartitionedParquetWriter
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.airflow_compat import ExecutorSafeguard

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
DAY_MS = 86_400_000
FIRST, LAST = date(2026, 11, 2), date(2026, 11, 4)


def day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def iso(ms: int, form: str) -> Any:
    """``ms`` written in one of the forms the export may use (all read alike by the Python rules)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    if form == "epoch":
        return ms
    if form == "Z":
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if form == "+00:00":
        return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    if form == "-00:00":
        return moment.strftime("%Y-%m-%dT%H:%M:%S-00:00")
    if form == "+05:30":
        return (moment + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%dT%H:%M:%S+05:30")
    if form == "-08:00":
        return (moment - timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S-08:00")
    if form == ".1Z":
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ms % 1000) // 100}Z"
    if form == ".123Z":
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
    if form == ".123456Z":  # microseconds: the Python rules cut them, Arrow's cast would refuse
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}789Z"
    if form == "space":
        return moment.strftime("%Y-%m-%d %H:%M:%SZ")
    if form == "lower-z":
        return moment.strftime("%Y-%m-%dT%H:%M:%Sz")
    if form == "padded":
        return " " + moment.strftime("%Y-%m-%dT%H:%M:%SZ") + " "
    if form == "naive":
        return moment.strftime("%Y-%m-%dT%H:%M:%S")
    if form == "float":
        return float(ms)
    raise AssertionError(form)


ARROW_FORMS = ("Z", "+00:00", "-00:00", "+05:30", "-08:00", ".1Z", ".123Z")
PYTHON_FORMS = (".123456Z", "space", "lower-z", "padded", "naive", "float")
TIME_FIELDS = ("timestamp", "ingest_timestamp", "start_time", "end_time", "created")


def with_times(record: dict[str, Any], form: str, nested_form: str | None = None) -> dict[str, Any]:
    """A sandbox record (times as epoch ms) with every time written in ``form``."""
    out = dict(record)
    for name in TIME_FIELDS:
        if isinstance(out.get(name), int):
            out[name] = iso(out[name], form)
    for name in ("crm_status", "internal_match_status"):
        if isinstance(out.get(name), dict) and isinstance(out[name].get("push_time"), int):
            out[name] = {**out[name], "push_time": iso(out[name]["push_time"], nested_form or form)}
    return out


@pytest.fixture(scope="module")
def raw_records() -> list[dict[str, Any]]:
    """Sandbox export records of 2026-11-01 .. 2026-11-05 (times as epoch ms), the earlier version
    of reprocessed activities included.
    """
    sandbox = Sandbox(seed=29, activities=1500, start=START, days=5)
    sandbox.export.settings.timestamp_format = "epoch_ms"
    sandbox.export.settings.stale_duplicates = True
    return sandbox.export_file_records(START.date(), START.date() + 4 * DAY, "snapshot")


def mutate(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One record with a random mix of the hard cases (every value one the Python rules accept).

    Most cases leave the line readable by Arrow (the record alone goes the Python way, or Arrow
    takes it exactly); a few make Arrow refuse the lines around it (an integral float in an
    integer field, a number where the block has text, an unknown key of two types), which are
    then read in halves: those are rarer, as in real files.
    """
    record = copy.deepcopy(record)
    roll = rng.random
    form = rng.choice(PYTHON_FORMS[:-1]) if roll() < 0.08 else rng.choice(ARROW_FORMS)
    record = with_times(record, form, rng.choice(PYTHON_FORMS[:-1]) if roll() < 0.05 else rng.choice(ARROW_FORMS))
    if roll() < 0.001:
        record["timestamp"] = iso(day_ms(FIRST) + 5000, "float")  # a number where the block has text
    if roll() < 0.002 and record.get("duration") is not None:
        record["duration"] = float(record["duration"])  # an integral float: Arrow refuses it in int64
    if roll() < 0.05:
        record["stats"] = {**(record.get("stats") or {}), "total_participants": -0}
    if roll() < 0.1:
        record.pop("account", None)
    if roll() < 0.1 and "account" in record:
        record["account"] = {k: v for k, v in record["account"].items() if v is not None}  # null members left out
    if roll() < 0.05 and "account" in record:
        record["account"] = dict(reversed(list(record["account"].items())))  # keys not sorted
    if roll() < 0.03:
        record["account"] = None  # an unknown key with a null value
    if roll() < 0.03 and isinstance(record.get("account"), dict):
        record["account"] = {
            **record["account"],
            "name": rng.choice(['quo"te', "back\\slash", "tab\there", "é ü 😀", "\u2028", ""]),
        }
    if roll() < 0.02:
        record["score"] = rng.choice(["x", "y", None])  # an unknown key of one type
    if roll() < 0.001:
        record["score"] = rng.choice([1, 1.5, True, [1, None], {"b": [True, {"c": 1}]}])  # ... and rarely another
    if roll() < 0.005:
        record["name"] = rng.choice([None, "an unknown top-level key that is a known nested name"])
    if roll() < 0.01 and record.get("crm_status"):
        record["crm_status"] = {**record["crm_status"], "new_key": rng.choice([None, "v"])}
    if roll() < 0.01 and record.get("participants"):
        people = [dict(p) for p in record["participants"]]
        people[rng.randrange(len(people))]["badge"] = rng.choice([None, "gold"])
        record["participants"] = people
    if roll() < 0.05 and record.get("campaigns"):
        campaigns = [dict(c) for c in record["campaigns"]]
        campaigns[0]["start_date"] = rng.choice(["2026-10-01", "2026-10-01T10:00:00Z", " 2026-10-01"])
        record["campaigns"] = campaigns
    if roll() < 0.03:
        record["subject"] = rng.choice(["é\u00e9", 'say "hi"', "a/b", "line\nbreak", "😀", ""])
    if roll() < 0.02:
        record["uid"] = None
    if roll() < 0.02:
        record["stats"] = {}
    if roll() < 0.02:
        record["tags"] = []
    return record


def encode(record: dict[str, Any], rng: random.Random) -> str:
    """A record as a line, in one of several JSON spellings (all one object on one line)."""
    style = rng.random()
    if style < 0.85:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    elif style < 0.92:
        text = json.dumps(record, ensure_ascii=True, separators=(",", ":"))  # \\u escapes
    else:
        text = json.dumps(record, ensure_ascii=False)  # spaces after colons and commas
    if rng.random() < 0.01:
        text = text.replace('"account":', '"\\u0061ccount":', 1)  # an escaped key name
    return text


def export_text(records: list[dict[str, Any]], rng: random.Random) -> bytes:
    lines = []
    for record in records:
        lines.append(encode(record, rng))
        if rng.random() < 0.01:
            lines.append(rng.choice(["", "   ", "\t"]))
    ending = "\r\n" if rng.random() < 0.2 else "\n"
    return (ending.join(lines) + ending).encode()


def write_parquet(buffer: RawExportBuffer, root: Path) -> dict[str, str]:
    """The buffer's days as the operator writes them; the sha256 of every file, by relative path."""
    writer = PartitionedParquetWriter(
        ObjectStoragePath(f"file://{root}"),
        RAW_ACTIVITY_SCHEMA,
        row_group_size=64,
        max_buffered_rows=64,
        plain_columns=RAW_ACTIVITY_PER_RECORD_FIELDS,
    )
    for day, batches in buffer.day_batches(chunk_rows=50):
        for batch in batches:
            writer.write(f"activity_date={day.isoformat()}", batch)
    writer.close()
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def both_ways(
    path: Path, tmp_path: Path, block_bytes: int, across_days: bool = True
) -> tuple[dict[str, str], dict[str, str], RawExportBuffer]:
    """The Parquet files of ``path`` read with Arrow (three blocks converted at once) and read the
    Python way (one at a time), and the Arrow buffer.
    """
    outputs = []
    buffers = []
    for arrow in (True, False):
        name = "arrow" if arrow else "python"
        spool = tmp_path / f"spool-{name}"
        spool.mkdir(parents=True)
        buffer = RawExportBuffer(
            str(spool),
            "timestamp",
            day_ms(FIRST),
            day_ms(LAST) + DAY_MS,
            across_days=across_days,
            arrow=arrow,
            block_bytes=block_bytes,
            max_buffered_rows=300,
            convert_workers=3 if arrow else 1,
        )
        buffer.add_file(str(path))
        outputs.append(write_parquet(buffer, tmp_path / f"lake-{name}"))
        buffers.append(buffer)
        buffer.close()
    assert buffers[0].counts.received == buffers[1].counts.received
    assert (buffers[0].counts.outside, buffers[0].counts.duplicates) == (buffers[1].counts.outside, buffers[1].counts.duplicates)
    assert buffers[0].converter.unknown_fields == buffers[1].converter.unknown_fields
    return outputs[0], outputs[1], buffers[0]


# -- the same bytes either way ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_files_mixing_hard_cases_write_the_same_parquet_bytes_with_arrow_and_in_python(
    raw_records: list[dict[str, Any]], tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    records = [mutate(r, rng) for r in raw_records]
    path = tmp_path / "export.jsonl.gz"
    path.write_bytes(gzip.compress(export_text(records, rng)))
    arrow, python, buffer = both_ways(path, tmp_path, block_bytes=rng.choice([50_000, 200_000, 1 << 20]))
    assert arrow == python
    assert len(arrow) == 3 and buffer.counts.received == len(records) > 1000
    # Both ways were taken, on many records each (the lines around a line Arrow refuses are read
    # again in halves, and the last halves, of DEFAULT_MIN_LINES lines, go the Python way).
    assert buffer.lines.python_rows > 100 and buffer.lines.arrow_rows > 0.3 * len(records)
    assert buffer.counts.duplicates > 0 and buffer.counts.outside > 0


def test_a_file_of_one_clean_form_is_read_by_arrow_alone(raw_records: list[dict[str, Any]], tmp_path: Path) -> None:
    for form in ("Z", "epoch"):
        path = tmp_path / f"{form}.jsonl"
        path.write_text("".join(json.dumps(with_times(r, form), ensure_ascii=False) + "\n" for r in raw_records))
        arrow, python, buffer = both_ways(path, tmp_path / form, block_bytes=1 << 20)
        assert arrow == python
        assert buffer.lines.python_rows == 0 and buffer.lines.arrow_rows == len(raw_records)
        assert buffer.converter.unknown_fields == {"account"}


CRAFTED = [
    # (why, line): every line alone, among clean records, must give the same bytes either way.
    ("mixed timestamp forms in one record", {"timestamp": "2026-11-02T03:04:05Z", "ingest_timestamp": 1793674800000}),
    ("an offset", {"timestamp": "2026-11-02T08:34:05+05:30"}),
    ("fractions", {"timestamp": "2026-11-02T03:04:05.5Z", "created": "2026-11-02T03:04:05.123456Z"}),
    ("a naive ISO time", {"timestamp": "2026-11-02T03:04:05"}),
    ("a date-only timestamp", {"timestamp": "2026-11-02"}),
    ("an epoch float", {"timestamp": 1793674800000.0}),
    ("epoch seconds as a string", {"timestamp": "1793674800"}),
    ("integral float in an int", {"timestamp": "2026-11-02T03:04:05Z", "duration": 60.0}),
    ("a day as a timestamp", {"timestamp": "2026-11-02T03:04:05Z", "campaigns": [{"start_date": "2026-11-02T23:00:00-05:00"}]}),
    ("a day as epoch ms", {"timestamp": "2026-11-02T03:04:05Z", "campaigns": [{"end_date": 1793674800000}]}),
    ("unknown struct, unsorted", {"timestamp": "2026-11-02T03:04:05Z", "account": {"name": "B", "crm_id": "1"}}),
    # (a member only this object has, beside members the others have with null values: which of
    # them each object holds cannot be told from Arrow's values, so every object of the block goes
    # the Python way)
    ("unknown with a float", {"timestamp": "2026-11-02T03:04:05Z", "account": {"crm_id": "1", "score": 0.5}}),
    ("unknown with a timestamp-like string", {"timestamp": "2026-11-02T03:04:05Z", "seen": "2026-11-02T03:04:05Z"}),
    ("unknown list of objects", {"timestamp": "2026-11-02T03:04:05Z", "extras": [{"a": 1}, None, {"a": None}]}),
    ("unknown null", {"timestamp": "2026-11-02T03:04:05Z", "account": None}),
    ("unknown empty object", {"timestamp": "2026-11-02T03:04:05Z", "account": {}}),
    ("unknown with escapes", {"timestamp": "2026-11-02T03:04:05Z", "account": {"crm_id": 'a"b\\c\td', "name": "é"}}),
    ("unknown big int", {"timestamp": "2026-11-02T03:04:05Z", "n": 2**70}),
    ("nested unknown", {"timestamp": "2026-11-02T03:04:05Z", "crm_status": {"pushed": True, "extra_flag": None}}),
    ("nested unknown in a list", {"timestamp": "2026-11-02T03:04:05Z", "participants": [{"name": "A", "badge": {"x": 1}}]}),
    ("unknown named as a nested known", {"timestamp": "2026-11-02T03:04:05Z", "name": None}),
    ("negative zero", {"timestamp": "2026-11-02T03:04:05Z", "stats": {"total_participants": -0}}),
    ("empty and missing", {"timestamp": "2026-11-02T03:04:05Z", "stats": {}, "tags": [], "participants": [{}]}),
    ("no uid", {"uid": None, "timestamp": "2026-11-02T03:04:05Z"}),
]


@pytest.mark.parametrize("changes", [c for _, c in CRAFTED], ids=[why for why, _ in CRAFTED])
def test_crafted_hard_cases_write_the_same_parquet_bytes_with_arrow_and_in_python(
    raw_records: list[dict[str, Any]], tmp_path: Path, changes: dict[str, Any]
) -> None:
    clean = [with_times(r, "Z") for r in raw_records[:300]]
    odd = {**clean[150], **changes}
    lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in clean]
    lines[150] = json.dumps(odd, ensure_ascii=False, separators=(",", ":"))
    path = tmp_path / "crafted.jsonl"
    path.write_text("\n".join(lines) + "\n")
    arrow, python, buffer = both_ways(path, tmp_path, block_bytes=1 << 20)
    assert arrow == python
    # The clean records around it stayed with Arrow (those with an unknown key too, but in one case).
    without_account = sum("account" not in record for record in clean)
    assert buffer.lines.arrow_rows >= (200 if "score" not in (changes.get("account") or {}) else without_account) > 0


@pytest.mark.parametrize(
    "line, error, words",
    [
        ('{"uid": "x", "timestamp": "2026-02-30T00:00:00Z"}', SchemaMismatchError, "timestamp"),
        ('{"uid": "x", "timestamp": "0000-01-01T00:00:00Z"}', SchemaMismatchError, "timestamp"),
        ('{"uid": "x", "campaigns": [{"start_date": "2026-02-30"}]}', SchemaMismatchError, "campaigns[0].start_date"),
        ('{"uid": "x", "duration": "60"}', SchemaMismatchError, "duration"),
        ('{"uid": "x", "duration": 60.5}', SchemaMismatchError, "duration"),
        ('{"uid": "x", "tags": "a"}', SchemaMismatchError, "tags"),
        ('{"uid": "x", "subject": "\xff"}', ExportFileError, "Line 3"),
        ('{"uid": "x"', ExportFileError, "Line 3"),
        ("[1, 2]", ExportFileError, "Line 3"),
        ('{"uid": "x"} {"uid": "y"}', ExportFileError, "Line 3"),
        ('{"uid": "x", "subject": "a\tb"}', ExportFileError, "Line 3"),
    ],
)
def test_bad_lines_fail_the_same_way_with_arrow_and_in_python(line: str, error: type[Exception], words: str) -> None:
    good = json.dumps({"uid": "ok", "timestamp": "2026-11-02T00:00:00Z"})
    data = (good + "\n" + good + "\n").encode() + line.encode("utf-8", "surrogateescape").replace(b"\xc3\xbf", b"\xff") + b"\n"
    messages = []
    for arrow in (True, False):
        converter = RawLinesConverter(arrow=arrow, path="export.jsonl", min_lines=1)
        with pytest.raises(error) as caught:
            converter.convert(ExportBlock(data, 1))
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and words in messages[0]


def test_a_line_arrow_refuses_sends_only_the_lines_around_it_the_python_way(raw_records: list[dict[str, Any]]) -> None:
    clean = [with_times(r, "Z") for r in raw_records[:1000]]
    clean[500] = {**clean[500], "duration": 30.0}
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in clean).encode()
    converter = RawLinesConverter(min_lines=16)
    table = converter.convert(ExportBlock(data, 1))
    assert converter.python_rows <= 16 and converter.arrow_rows == 1000 - converter.python_rows
    assert table.column("duration")[500].as_py() == 30
    assert table.equals(RawLinesConverter(arrow=False).convert(ExportBlock(data, 1)))


def test_a_block_without_records_and_blank_lines_between_records() -> None:
    converter = RawLinesConverter()
    assert converter.convert(ExportBlock(b"\n  \n\t\n", 1)).num_rows == 0
    table = converter.convert(ExportBlock(b'\n{"uid":"a"}\n\n   \n{"uid":"b"}', 1))
    assert table.column("uid").to_pylist() == ["a", "b"] and table.schema.equals(RAW_ACTIVITY_SCHEMA)
    assert converter.arrow_rows == 2


def test_rows_come_out_in_file_order_when_some_go_the_python_way() -> None:
    lines = []
    for index in range(40):
        record: dict[str, Any] = {"uid": f"u{index:02d}", "timestamp": "2026-11-02T00:00:00Z", "duration": 5}
        if index % 7 == 3:
            record["duration"] = 5.0  # Python
        if index % 11 == 5:
            record["timestamp"] = 1793577600000  # mixed forms in the block
        lines.append(json.dumps(record))
    converter = RawLinesConverter(min_lines=4)
    table = converter.convert(ExportBlock(("\n".join(lines) + "\n").encode(), 1))
    assert table.column("uid").to_pylist() == [f"u{i:02d}" for i in range(40)]
    assert table.column("duration").to_pylist() == [5] * 40
    assert converter.python_rows > 0 and converter.arrow_rows > 0


# -- de-duplication across the days of a run, through the operator ----------------------------------


@pytest.fixture(autouse=True)
def _execute_outside_the_task_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ExecutorSafeguard, "test_mode", True)


class FileHost:
    """A loopback HTTP server that answers every GET with one body (stopped by the fixture)."""

    def __init__(self) -> None:
        self.body = b""
        self.first_bodies: list[bytes] = []
        """Answered, one per GET, before ``body``."""
        self.gets = 0
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                host.gets += 1
                body = host.first_bodies.pop(0) if host.first_bodies else host.body
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/export.jsonl.gz"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def file_host() -> Iterator[FileHost]:
    host = FileHost()
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox(seed=31, activities=1200, start=START, days=6, rate_limit=None) as sb:
        settings = {"requests_per_second": 10_000, "backoff_base": 0.001, "backoff_max": 0.01}
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sb.connection_json(**settings))
        sb.export.settings.polls = 0
        yield sb


def run_snapshot(
    output: Path, first: date, last: date, monkeypatch: pytest.MonkeyPatch, sb: Sandbox, **extra: Any
) -> dict[str, Any]:
    if extra:
        settings = {"requests_per_second": 10_000, "backoff_base": 0.001, "backoff_max": 0.01, **extra}
        monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sb.connection_json(**settings))
    op = PeopleAIExportActivitiesToParquetOperator(
        task_id="export", output_path=f"file://{output}", export_type="snapshot", deferrable=False, poll_interval=0.01
    )
    context = {
        "data_interval_start": datetime(first.year, first.month, first.day, tzinfo=UTC),
        "data_interval_end": datetime(last.year, last.month, last.day, tzinfo=UTC) + DAY,
        "logical_date": START,
        "run_id": "manual__test",
        "params": {},
    }
    op.render_template_fields(context)
    return op.execute(context)


def lake_rows(root: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        d.name: [row for p in sorted(d.glob("*.parquet")) for row in pq.read_table(p).to_pylist()]
        for d in sorted((root / "raw_activities").iterdir())
        if not d.name.startswith("_")
    }


def lake_bytes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def moved_file(sb: Sandbox) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """A snapshot file of FIRST..LAST in which some activities appear twice, their timestamp moved to
    another day of the run, and what a correct run keeps of it, by partition.
    """
    records = [with_times(r, "Z") for r in sb.export_file_records(FIRST, LAST, "snapshot")]
    rng = random.Random(5)
    extra = []
    for index, record in enumerate(records[::9]):
        moved = copy.deepcopy(record)
        shift = rng.choice([-1, 1]) * DAY_MS * rng.choice([1, 2])
        moment = int(datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp() * 1000) + shift
        if not day_ms(FIRST) <= moment < day_ms(LAST) + DAY_MS:
            continue
        ingest = int(datetime.fromisoformat(record["ingest_timestamp"].replace("Z", "+00:00")).timestamp() * 1000)
        later = index % 2 == 0  # half the moved versions are newer (they win), half older (they lose)
        moved["timestamp"] = iso(moment, "Z")
        moved["ingest_timestamp"] = iso(ingest + (3_600_000 if later else -3_600_000), "Z")
        moved["tags"] = [*moved["tags"], "moved"]
        extra.append(moved)
    assert len(extra) > 30
    file_records = records + extra
    rng.shuffle(file_records)
    # The reference: the latest version of each uid (greatest ingest_timestamp, then the later line),
    # in the day of its own timestamp; each day ordered by timestamp, then uid.
    best: dict[str, tuple[int, int, dict[str, Any]]] = {}
    for position, record in enumerate(file_records):
        ingest = int(datetime.fromisoformat(record["ingest_timestamp"].replace("Z", "+00:00")).timestamp() * 1000)
        key = (ingest, position)
        if record["uid"] not in best or key > best[record["uid"]][:2]:
            best[record["uid"]] = (ingest, position, record)
    kept = sorted((r for _, _, r in best.values()), key=lambda r: (r["timestamp"], r["uid"]))
    rows = RawRecordConverter().to_batch(kept).to_pylist()
    expected: dict[str, list[dict[str, Any]]] = {}
    day = FIRST
    while day <= LAST:
        expected[f"activity_date={day.isoformat()}"] = []
        day += DAY
    for row in rows:
        expected[f"activity_date={row['timestamp'].date().isoformat()}"].append(row)
    return file_records, expected


def test_a_snapshot_keeps_one_version_of_an_activity_across_the_days_of_the_run_in_the_latest_versions_day(
    sandbox: Sandbox, file_host: FileHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, expected = moved_file(sandbox)
    file_host.body = gzip.compress("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode(), mtime=0)
    sandbox.export.settings.redirect_url = file_host.url
    result = run_snapshot(tmp_path / "lake", FIRST, LAST, monkeypatch, sandbox)

    written = lake_rows(tmp_path / "lake")
    assert list(written) == list(expected)
    for partition in expected:
        assert written[partition] == expected[partition], partition
    uids = [row["uid"] for rows in written.values() for row in rows]
    assert len(uids) == len(set(uids))  # each activity once in the whole run
    moved_won = [row for rows in written.values() for row in rows if "moved" in row["tags"]]
    assert moved_won  # newer versions in another day replaced the original ones
    assert result["duplicates_dropped"] == len(records) - len(uids)
    assert result["rows"] == len(uids)

    # A rerun writes the same bytes, and so does a run reading every record the Python way.
    before = lake_bytes(tmp_path / "lake")
    run_snapshot(tmp_path / "lake", FIRST, LAST, monkeypatch, sandbox)
    assert lake_bytes(tmp_path / "lake") == before
    run_snapshot(tmp_path / "python-lake", FIRST, LAST, monkeypatch, sandbox, arrow_parsing=False)
    assert {k.replace("python-lake", "lake"): v for k, v in lake_bytes(tmp_path / "python-lake").items()} == before


def _corrupt(body: bytes, where: str) -> bytes:
    """``body`` with its gzip checksum wrong, or bytes flipped in the middle of its deflate data."""
    if where == "checksum":
        return body[:-8] + bytes(b ^ 0xFF for b in body[-8:-4]) + body[-4:]
    middle = len(body) // 2
    return body[:middle] + bytes(b ^ 0x5A for b in body[middle : middle + 64]) + body[middle + 64 :]


@pytest.mark.parametrize("where", ["checksum", "middle"])
def test_a_file_found_corrupt_while_converted_is_downloaded_again_and_the_run_is_exact(
    sandbox: Sandbox, file_host: FileHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The gzip stream is not inflated while it downloads (its conversion inflates it): a corrupt
    one is found then, and the files are downloaded again into a fresh spool.
    """
    records, _expected = moved_file(sandbox)
    good = gzip.compress("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode(), mtime=0)
    file_host.body = good
    sandbox.export.settings.redirect_url = file_host.url
    run_snapshot(tmp_path / "clean", FIRST, LAST, monkeypatch, sandbox)
    file_host.gets = 0
    file_host.first_bodies = [_corrupt(good, where)]
    result = run_snapshot(tmp_path / "lake", FIRST, LAST, monkeypatch, sandbox)
    assert file_host.gets == 2
    assert lake_bytes(tmp_path / "lake") == lake_bytes(tmp_path / "clean")
    assert result["rows"] == sum(len(rows) for rows in lake_rows(tmp_path / "clean").values())


def test_a_file_corrupt_at_every_download_fails_naming_the_job_and_keeps_the_previous_data(
    sandbox: Sandbox, file_host: FileHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, _expected = moved_file(sandbox)
    good = gzip.compress("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode(), mtime=0)
    file_host.body = good
    sandbox.export.settings.redirect_url = file_host.url
    run_snapshot(tmp_path / "lake", FIRST, LAST, monkeypatch, sandbox)
    before = lake_bytes(tmp_path / "lake")
    file_host.gets = 0
    file_host.body = _corrupt(good, "checksum")
    with pytest.raises(PeopleAIError, match=r"People.ai export job \S+: export file job-000.jsonl: corrupt gzip stream: CRC .*3 downloads"):
        run_snapshot(tmp_path / "lake", FIRST, LAST, monkeypatch, sandbox)
    assert file_host.gets == 3
    assert lake_bytes(tmp_path / "lake") == before


def test_a_day_whose_every_activity_moved_to_a_later_version_elsewhere_is_an_empty_partition(
    sandbox: Sandbox, file_host: FileHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = {"uid": "a1", "timestamp": "2026-11-02T10:00:00Z", "ingest_timestamp": "2026-11-02T11:00:00Z", "tags": ["v1"]}
    second = {**first, "timestamp": "2026-11-03T10:00:00Z", "ingest_timestamp": "2026-11-03T11:00:00Z", "tags": ["v2"]}
    file_host.body = gzip.compress((json.dumps(second) + "\n" + json.dumps(first) + "\n").encode())
    sandbox.export.settings.redirect_url = file_host.url
    result = run_snapshot(tmp_path / "lake", FIRST, date(2026, 11, 3), monkeypatch, sandbox)
    written = lake_rows(tmp_path / "lake")
    assert {k: [r["tags"] for r in v] for k, v in written.items()} == {
        "activity_date=2026-11-02": [],
        "activity_date=2026-11-03": [["v2"]],
    }
    assert result["duplicates_dropped"] == 1 and result["rows"] == 1


def test_pyarrow_reads_the_arrow_written_rows_as_the_schema_says(raw_records: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("".join(json.dumps(with_times(r, "+00:00")) + "\n" for r in raw_records[:200]))
    buffer = RawExportBuffer(str(tmp_path), "timestamp", day_ms(date(2026, 11, 1)), day_ms(date(2026, 11, 6)))
    buffer.add_file(str(path))
    days = dict(buffer.days())
    table = pa.concat_tables(days.values())
    assert table.schema.equals(RAW_ACTIVITY_SCHEMA, check_metadata=True)
    assert str(table.schema.field("timestamp").type) == "timestamp[ms, tz=UTC]"
    buffer.close()


# -- days written in lanes --------------------------------------------------------------------------


def _lane_writers(root: Path, lanes: int, schema: pa.Schema = RAW_ACTIVITY_SCHEMA) -> list[PartitionedParquetWriter]:
    return [
        PartitionedParquetWriter(
            ObjectStoragePath(f"file://{root}"),
            schema,
            row_group_size=64,
            max_buffered_rows=64,
            plain_columns=RAW_ACTIVITY_PER_RECORD_FIELDS,
        )
        for _ in range(lanes)
    ]


def _lane_buffer(path: Path, spool: Path) -> RawExportBuffer:
    spool.mkdir(parents=True)
    buffer = RawExportBuffer(
        str(spool), "timestamp", day_ms(FIRST), day_ms(LAST) + DAY_MS, across_days=True, max_buffered_rows=300
    )
    buffer.add_file(str(path))
    return buffer


def test_days_written_in_lanes_are_the_same_files_as_in_one(raw_records: list[dict[str, Any]], tmp_path: Path) -> None:
    """Each lane writes days of its own; a partition's bytes do not depend on the lanes (nor do the counts)."""
    rng = random.Random(5)
    path = tmp_path / "export.jsonl"
    path.write_bytes(export_text([mutate(r, rng) for r in raw_records], rng))
    days = [FIRST + DAY * n for n in range((LAST - FIRST).days + 2)]  # and a day after the rows: a zero-row file
    found = {}
    for lanes in (1, 2, 3):
        buffer = _lane_buffer(path, tmp_path / f"spool-{lanes}")
        root = tmp_path / f"lake-{lanes}"
        files = write_days(buffer, _lane_writers(root, lanes), days, "activity_date")
        assert list(files) == [f"activity_date={day.isoformat()}" for day in days]
        hashes = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}
        found[lanes] = (hashes, files, buffer.counts.duplicates)
        buffer.close()
    assert found[1] == found[2] == found[3]
    assert found[1][1][f"activity_date={days[-1].isoformat()}"][0].rows == 0
    assert found[1][2] > 0


def test_a_lane_that_fails_stops_the_others_and_its_error_is_raised(raw_records: list[dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_bytes(export_text(raw_records, random.Random(6)))
    buffer = _lane_buffer(path, tmp_path / "spool")
    days = [FIRST + DAY * n for n in range((LAST - FIRST).days + 1)]
    good = _lane_writers(tmp_path / "lake", 2)
    wrong = _lane_writers(tmp_path / "lake", 1, RAW_ACTIVITY_SCHEMA.remove(0))[0]  # refuses every batch
    before = set(threading.enumerate())
    with pytest.raises(ValueError, match="does not have the writer's file schema"):
        write_days(buffer, [good[0], wrong, good[1]], days, "activity_date")
    buffer.close()
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("peopleai-export")]
