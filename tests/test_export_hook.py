"""PeopleAIHook's bulk export methods against the sandbox over real HTTP: create, poll, download
and iterate; redirects to the same host (with the token) and to another host (without it);
refused redirects; gzip, plain and ``Content-Encoding: gzip``; cut-off bodies retried then
reported; 429 waited out; bad input refused before any request; no secret in logs or errors.
"""

from __future__ import annotations

import gzip
import logging
import os
import socket
import zlib
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_activities.api.errors import PeopleAIAPIError
from airflow_provider_activities.api.export import (
    ExportJob,
    InvalidResponseError,
    is_capacity_error,
    parse_export_job,
    plan_export_jobs,
    redirect_target,
)
from airflow_provider_activities.api.protocol import ApiRequest
from airflow_provider_activities.export.files import (
    ExportFileError,
    ExportFileSink,
    ExportStreamError,
    gzip_stream_problem,
    iter_export_blocks,
    iter_export_lines,
)
from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.testing._export import ExportSettings
from airflow_provider_activities.testing.sandbox import Sandbox

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
SECRET = "export-hook-test-secret-9c1e"
JOBS = "/pull/v1/export/activities/jobs"
FAST = {"requests_per_second": 10_000, "backoff_base": 0.01, "backoff_max": 0.02, "max_retries": 3}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox for the module: 600 activities over 4 days, no rate limit."""
    with Sandbox(seed=9, activities=600, start=START, days=4, rate_limit=None, client_secret=SECRET) as sb:
        yield sb
        assert sb.errors == []


@pytest.fixture
def sb(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The module's sandbox with default knobs (jobs finish at the first poll), no faults, an empty
    request log, and ``peopleai_default`` pointing at it; left-over jobs are expired afterwards.
    """
    sandbox.export.settings = ExportSettings(polls=0)
    sandbox.faults.reset()
    sandbox.reset_log()
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", sandbox.connection_json(**FAST))
    yield sandbox
    for job in sandbox.export.jobs:
        if not job.expired:
            sandbox.export.expire(job.job_id)
    sandbox.faults.reset()


@pytest.fixture
def hook(sb: Sandbox) -> Iterator[PeopleAIHook]:
    """A hook on the sandbox, closed afterwards."""
    made = PeopleAIHook()
    yield made
    made.close()


def completed(hook: PeopleAIHook, start: str = "2026-11-01", end: str = "2026-11-02", export_type: str = "snapshot") -> ExportJob:
    """A job created and polled to ``Completed``."""
    job = hook.create_export_job(start, end, export_type)
    for _ in range(20):
        job = hook.get_export_job(job.job_id)
        if job.finished:
            break
    assert job.state == "Completed"
    return job


def tokens(sb: Sandbox) -> list[str]:
    return list(sb.token_uses())


# -- the round trip -------------------------------------------------------------------------------


class TestRoundTrip:
    def test_create_poll_and_iterate(self, sb: Sandbox, hook: PeopleAIHook, tmp_path: Path) -> None:
        sb.export.settings.polls = 2
        job = hook.create_export_job(date(2026, 11, 1), "2026-11-03", "snapshot", activity_type="meeting")
        assert job.state == "Queued" and not job.finished
        assert (job.start_date, job.end_date, job.activity_type) == ("2026-11-01", "2026-11-03", "meeting")
        assert job.created_at() is not None
        states = [hook.get_export_job(job.job_id).state for _ in range(3)]
        assert states == ["Queued", "Running", "Completed"]
        records = list(hook.iter_export_records(job.job_id, directory=str(tmp_path)))
        assert records == sb.export_file_records("2026-11-01", "2026-11-03", "snapshot", "meeting")
        assert records and all(r["type"] == "meeting" for r in records)
        assert list(tmp_path.iterdir()) == []  # the temporary file is gone
        (body,) = [r for r in sb.requests if r.method == "POST" and r.path == JOBS]
        assert body.status == 200

    def test_utc_midnight_datetimes_are_days(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        job = hook.create_export_job(START, datetime(2026, 11, 2, 1, tzinfo=timezone(timedelta(hours=1))), "delta")
        assert (job.start_date, job.end_date, job.export_type) == ("2026-11-01", "2026-11-02", "delta")

    def test_download_export_reports_the_file(self, sb: Sandbox, hook: PeopleAIHook, tmp_path: Path) -> None:
        job = completed(hook)
        found = hook.download_export(job.job_id, tmp_path / "data.jsonl.gz")
        data = (tmp_path / "data.jsonl.gz").read_bytes()
        assert found.compressed and found.bytes == len(data) and data[:2] == b"\x1f\x8b"
        assert found.content_bytes == len(gzip.decompress(data))
        assert list(iter_export_lines(found.path)) == sb.export_file_records("2026-11-01", "2026-11-02")

    def test_iteration_closed_early_removes_the_file(self, sb: Sandbox, hook: PeopleAIHook, tmp_path: Path) -> None:
        job = completed(hook)
        records = hook.iter_export_records(job.job_id, directory=str(tmp_path))
        first = next(records)
        assert first["uid"] and len(list(tmp_path.iterdir())) == 1
        records.close()
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("state", ["Failed", "Canceled"])
    def test_failed_job_has_no_data(self, sb: Sandbox, hook: PeopleAIHook, state: str) -> None:
        sb.export.fail_next(1, state=state)
        job = hook.create_export_job("2026-11-01", "2026-11-01", "delta")
        job = hook.get_export_job(job.job_id)
        assert job.state == state and job.failed and job.finished and not job.completed
        with pytest.raises(PeopleAIAPIError) as caught:
            list(hook.iter_export_records(job.job_id))
        assert caught.value.status == 400 and state in str(caught.value)

    def test_expired_job_is_404(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        job = completed(hook)
        sb.export.expire(job.job_id)
        with pytest.raises(PeopleAIAPIError) as caught:
            hook.get_export_job(job.job_id)
        assert caught.value.status == 404 and job.job_id in str(caught.value)

    def test_planned_jobs_each_within_the_limit(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        specs = plan_export_jobs(date(2025, 10, 1), date(2026, 11, 4), "snapshot")
        assert [(s.start_date, s.end_date) for s in specs] == [
            (date(2025, 10, 1), date(2026, 9, 30)),
            (date(2026, 10, 1), date(2026, 11, 4)),
        ]
        jobs = [hook.start_export_job(spec) for spec in specs]
        assert [j.start_date for j in jobs] == ["2025-10-01", "2026-10-01"]
        records = list(hook.iter_export_records(hook.get_export_job(jobs[1].job_id).job_id))
        assert records == sb.export_file_records("2026-10-01", "2026-11-04")


# -- redirects ------------------------------------------------------------------------------------


class TestRedirects:
    def test_same_host_gets_the_token(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        job = completed(hook)
        before = len(sb.export.file_requests)
        assert list(hook.iter_export_records(job.job_id)) == sb.export_file_records("2026-11-01", "2026-11-02")
        (request,) = sb.export.file_requests[before:]
        assert (request.host, request.authorization, request.status) == ("127.0.0.1", True, 200)

    def test_other_host_gets_no_token(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        sb.export.settings.redirect = "other_host"
        job = completed(hook)
        before = len(sb.export.file_requests)
        assert list(hook.iter_export_records(job.job_id)) == sb.export_file_records("2026-11-01", "2026-11-02")
        (request,) = sb.export.file_requests[before:]
        assert request.authorization is False and request.status == 200
        assert request.host == sb.file_host_url.split("//")[1].split(":")[0]

    def test_no_redirect_data_in_the_answer(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        sb.export.settings.redirect = None
        job = completed(hook)
        before = len(sb.export.file_requests)
        assert list(hook.iter_export_records(job.job_id)) == sb.export_file_records("2026-11-01", "2026-11-02")
        assert sb.export.file_requests[before:] == []

    @pytest.mark.parametrize(
        "url",
        [
            "http://203.0.113.7/files/x.jsonl.gz?Signature=s3cr3t-sig",
            "ftp://127.0.0.1/files/x.jsonl.gz",
            "file:///etc/passwd",
            "data:text/plain,{}",
            "http://10.0.0.1:8080/x.jsonl",
        ],
    )
    def test_refused_before_any_connection(self, sb: Sandbox, hook: PeopleAIHook, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        sb.export.settings.redirect_url = url
        job = completed(hook)
        sent: list[str] = []
        real = hook._send_to_sink
        monkeypatch.setattr(hook, "_send_to_sink", lambda request, sink: sent.append(request.url(hook.config)) or real(request, sink))
        connects: list[Any] = []
        real_connect = socket.create_connection
        monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a) or real_connect(*a, **k))
        with pytest.raises(PeopleAIAPIError, match="refused") as caught:
            hook.download_export(job.job_id, os.devnull)
        assert sent == [sb.url(f"{JOBS}/{job.job_id}/data")]  # the data endpoint only
        assert all("203.0.113.7" not in str(a) for a in connects)
        assert "s3cr3t-sig" not in str(caught.value)

    def test_redirect_rules(self) -> None:
        request = ApiRequest("GET", "/data")
        base = "https://api.people.ai/pull/v1/export/activities/jobs/1/data"
        assert redirect_target(base, "/files/1.gz?Sig=x", request, 302) == "https://api.people.ai/files/1.gz?Sig=x"
        assert redirect_target(base, "https://bucket.s3.amazonaws.com/1.gz", request, 302).startswith("https://bucket")
        assert redirect_target(base, "http://127.0.0.2:9/1.gz", request, 307) == "http://127.0.0.2:9/1.gz"
        assert redirect_target(base, "HTTP://localhost/1.gz", request, 302).endswith("localhost/1.gz")
        for refused in ("http://bucket.s3.amazonaws.com/1.gz?Signature=abc", "//evil.example/x", "gopher://127.0.0.1/"):
            target_base = "http://127.0.0.1:8/data" if refused.startswith("//") else base
            with pytest.raises(PeopleAIAPIError, match="refused") as caught:
                redirect_target(target_base, refused, request, 302)
            assert "Signature" not in str(caught.value)
        with pytest.raises(PeopleAIAPIError, match="Location"):
            redirect_target(base, None, request, 302)

    def test_redirect_loop_ends(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        job = completed(hook)
        sb.export.settings.redirect_url = f"{JOBS}/{job.job_id}/data"
        with pytest.raises(PeopleAIAPIError, match="redirects"):
            hook.download_export(job.job_id, os.devnull)


# -- bodies ---------------------------------------------------------------------------------------


class TestBodies:
    @pytest.mark.parametrize(
        "knobs, compressed",
        [
            ({"gzip": True}, True),
            ({"gzip": False}, False),
            ({"gzip": True, "content_encoding": True}, True),  # kept as sent, inflated by the sink
            ({"gzip": True, "redirect": "other_host"}, True),
            ({"gzip": False, "redirect": None}, False),
        ],
    )
    def test_gzip_and_plain(self, sb: Sandbox, hook: PeopleAIHook, tmp_path: Path, knobs: dict[str, Any], compressed: bool) -> None:
        for name, value in knobs.items():
            setattr(sb.export.settings, name, value)
        job = completed(hook)
        found = hook.download_export(job.job_id, tmp_path / "data")
        assert found.compressed is compressed
        assert list(iter_export_lines(found.path)) == sb.export_file_records("2026-11-01", "2026-11-02")

    @pytest.mark.parametrize("gzipped", [True, False])
    def test_cut_body_retried(self, sb: Sandbox, hook: PeopleAIHook, tmp_path: Path, gzipped: bool) -> None:
        sb.export.settings.gzip = gzipped
        job = completed(hook)
        path = sb.export.file_path(job.job_id)
        sb.faults.invalid_json(2, path=path)  # the file cut in half twice, with a matching Content-Length
        records = list(hook.iter_export_records(job.job_id, directory=str(tmp_path)))
        assert records == sb.export_file_records("2026-11-01", "2026-11-02")
        assert [r.status for r in sb.requests if r.path == path] == [200, 200, 200]
        assert [r.fault for r in sb.requests if r.path == path] == ["invalid_json", "invalid_json", None]

    @pytest.mark.parametrize("gzipped, words", [(True, "gzip stream cut short"), (False, "last line is not a whole JSON object")])
    def test_cut_body_every_time_is_a_clear_error(
        self, sb: Sandbox, hook: PeopleAIHook, tmp_path: Path, gzipped: bool, words: str
    ) -> None:
        sb.export.settings.gzip = gzipped
        job = completed(hook)
        path = sb.export.file_path(job.job_id)
        sb.faults.invalid_json(10, path=path)
        with pytest.raises(PeopleAIAPIError, match=words) as caught:
            list(hook.iter_export_records(job.job_id, directory=str(tmp_path)))
        assert caught.value.attempts == FAST["max_retries"] + 1
        assert caught.value.path == path
        assert len([r for r in sb.requests if r.path == path]) == FAST["max_retries"] + 1
        assert list(tmp_path.iterdir()) == []

    def test_dropped_connection_retried(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        sb.export.settings.redirect = "other_host"
        job = completed(hook)
        path = sb.export.file_path(job.job_id)
        sb.faults.drop_connection(1, path=path)
        sb.faults.fail_next(1, status=503, path=path)
        assert list(hook.iter_export_records(job.job_id)) == sb.export_file_records("2026-11-01", "2026-11-02")
        assert [r.status for r in sb.export.file_requests[-3:]] == [503, 200, 200]
        assert [r.fault for r in sb.requests if r.path == path] == ["fail_next", "drop_connection", None]

    def test_content_encoding_cut_retried(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        sb.export.settings.content_encoding = True
        job = completed(hook)
        sb.faults.drop_connection(1, path=sb.export.file_path(job.job_id))
        assert list(hook.iter_export_records(job.job_id)) == sb.export_file_records("2026-11-01", "2026-11-02")

    def test_content_encoding_short_body_is_a_cut_gzip_stream(
        self, sb: Sandbox, hook: PeopleAIHook, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
    ) -> None:
        """A ``Content-Encoding: gzip`` body cut short (with a matching Content-Length) is seen as
        a cut gzip stream, not as JSON Lines that may happen to end at a whole line.
        """
        sb.export.settings.content_encoding = True
        job = completed(hook)
        sb.faults.invalid_json(1, path=sb.export.file_path(job.job_id))
        assert list(hook.iter_export_records(job.job_id)) == sb.export_file_records("2026-11-01", "2026-11-02")
        captured = capsys.readouterr()
        assert "gzip stream cut short" in captured.out + captured.err + caplog.text

    def test_empty_export(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        job = completed(hook, "2027-06-01", "2027-06-02")
        assert list(hook.iter_export_records(job.job_id)) == []


class TestSink:
    """The sink on its own: gzip by magic bytes, multi-member and padding, truncation."""

    def feed(self, tmp_path: Path, data: bytes, chunk: int = 7, inflate: bool = True) -> Any:
        sink = ExportFileSink(str(tmp_path / "f"), inflate=inflate)
        sink.begin()
        for i in range(0, len(data), chunk):
            sink.write(data[i : i + chunk])
        sink.end()
        return sink.result()

    def test_gzip_in_small_chunks(self, tmp_path: Path) -> None:
        text = b"".join(b'{"uid":"%d"}\n' % i for i in range(500))
        found = self.feed(tmp_path, gzip.compress(text), chunk=1)
        assert found.compressed and found.content_bytes == len(text)

    def test_members_and_padding(self, tmp_path: Path) -> None:
        data = gzip.compress(b'{"a":1}\n') + gzip.compress(b'{"a":2}\n') + b"\0" * 16
        found = self.feed(tmp_path, data)
        assert found.compressed and found.content_bytes == 16
        assert list(iter_export_lines(found.path)) == [{"a": 1}, {"a": 2}]

    @pytest.mark.parametrize(
        "data, words",
        [
            (gzip.compress(b'{"a":1}\n' * 50)[:-9], "cut short"),
            (b"\x1f", "cut short after 1 byte"),
            (gzip.compress(b'{"a":1}\n') + b"trailing", "corrupt gzip"),
            (b'{"a":1}\n{"a":', "last line"),
        ],
    )
    def test_refused(self, tmp_path: Path, data: bytes, words: str) -> None:
        with pytest.raises(InvalidResponseError, match=words):
            self.feed(tmp_path, data)

    def test_without_inflating_a_gzip_body_is_only_written_and_its_reader_finds_it_corrupt(self, tmp_path: Path) -> None:
        """``inflate=False`` leaves the gzip check to the reader of the file; a plain body's last line is checked still."""
        cut = gzip.compress(b'{"a":1}\n' * 50)[:-9]
        found = self.feed(tmp_path, cut, inflate=False)
        assert found.compressed and found.content_bytes is None and (tmp_path / "f").read_bytes() == cut
        assert gzip_stream_problem(found.path) is not None
        with pytest.raises(ExportStreamError, match="export file f: corrupt gzip stream: Compressed file ended"):
            list(iter_export_blocks(found.path))
        whole = self.feed(tmp_path, gzip.compress(b'{"a":1}\n' * 50), inflate=False)
        assert gzip_stream_problem(whole.path) is None
        with pytest.raises(InvalidResponseError, match="last line"):
            self.feed(tmp_path, b'{"a":1}\n{"a":', inflate=False)

    def test_begin_starts_over(self, tmp_path: Path) -> None:
        sink = ExportFileSink(str(tmp_path / "f"))
        sink.begin()
        sink.write(gzip.compress(b'{"a":1}\n')[:10])
        sink.begin()
        sink.write(b'{"a":2}\n')
        sink.end()
        found = sink.result()
        assert not found.compressed and (tmp_path / "f").read_bytes() == b'{"a":2}\n'

    def test_bad_line_named(self, tmp_path: Path) -> None:
        (tmp_path / "f").write_bytes(b'{"a":1}\n\n[1]\n')
        with pytest.raises(ExportFileError, match="Line 3") as caught:
            list(iter_export_lines(str(tmp_path / "f")))
        assert caught.value.line == 3
        (tmp_path / "g").write_bytes(gzip.compress(b'{"a":1}\nnot json\n'))
        with pytest.raises(ExportFileError, match="Line 2"):
            list(iter_export_lines(str(tmp_path / "g")))
        assert zlib  # imported for symmetry with the sink's inflater


# -- limits and input -----------------------------------------------------------------------------


class TestLimitsAndInput:
    def test_429_on_create_waited_out(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        sb.export.refuse_next(2)
        job = hook.create_export_job("2026-11-01", "2026-11-02", "snapshot")
        assert job.state == "Queued"
        assert [r.status for r in sb.requests if r.path == JOBS] == [429, 429, 200]
        assert len(sb.export.jobs) and sb.export.jobs[-1].job_id == job.job_id

    def test_too_many_jobs_as_400_is_a_capacity_error(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        sb.export.settings.limit_status = 400
        sb.export.refuse_next(1)
        with pytest.raises(PeopleAIAPIError) as caught:
            hook.create_export_job("2026-11-01", "2026-11-02", "snapshot")
        assert caught.value.status == 400 and is_capacity_error(caught.value)
        assert [r.status for r in sb.requests if r.path == JOBS] == [400]

    def test_range_error_is_not_a_capacity_error(self, sb: Sandbox, hook: PeopleAIHook) -> None:
        sb.export.refuse_next(1, status=400, message="Date range is invalid")
        with pytest.raises(PeopleAIAPIError) as caught:
            hook.create_export_job("2026-11-01", "2026-11-02", "snapshot")
        assert not is_capacity_error(caught.value)

    @pytest.mark.parametrize(
        "args, words",
        [
            (("2026-11-01", "2026-11-02", "full"), "export_type"),
            (("2026-11-01", "2026-11-02", "delta", "sms"), "activity_type"),
            (("2026/11/01", "2026-11-02", "delta"), "start_date"),
            (("2026-11-01", "2026-02-30", "delta"), "end_date"),
            ((datetime(2026, 11, 1), "2026-11-02", "delta"), "naive"),
            ((datetime(2026, 11, 1, 6, tzinfo=UTC), "2026-11-02", "delta"), "midnight"),
            (("2026-11-03", "2026-11-02", "delta"), "before"),
            (("2026-11-01", "2026-11-15", "delta"), "15 days"),
            (("2025-11-01", "2026-11-01", "snapshot"), "366 days"),
            ((None, "2026-11-01", "snapshot"), "start_date"),
            ((20261101, "2026-11-01", "snapshot"), "start_date"),
        ],
    )
    def test_bad_create_input(self, sb: Sandbox, hook: PeopleAIHook, args: tuple[Any, ...], words: str) -> None:
        with pytest.raises(ValueError, match=words):
            hook.create_export_job(*args)
        assert sb.requests == []

    @pytest.mark.parametrize("job_id", ["", "..", ".", "a/b", "../../v0/public/activities", "x?y", "x\n", None, 12, "a" * 201])
    def test_bad_job_ids(self, sb: Sandbox, hook: PeopleAIHook, job_id: Any, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="job id"):
            hook.get_export_job(job_id)
        with pytest.raises(ValueError, match="job id"):
            hook.download_export(job_id, tmp_path / "f")
        with pytest.raises(ValueError, match="job id"):
            hook.iter_export_records(job_id, directory=str(tmp_path))  # raised at the call
        assert sb.requests == []
        assert list(tmp_path.iterdir()) == []

    def test_wrapped_job_answer(self) -> None:
        job = parse_export_job(b'{"data": {"job_id": 7, "state": "COMPLETED"}}')
        assert (job.job_id, job.state, job.completed) == ("7", "Completed", True)
        assert parse_export_job(b'{"job_id": "x", "state": "cancelled"}').state == "Canceled"
        assert parse_export_job(b'{"job_id": "x", "state": "Archiving"}').finished is False
        for bad in (b"[]", b'{"state": "Queued"}', b'{"job_id": "x"}', b'{"job_id": true, "state": "Queued"}'):
            with pytest.raises(InvalidResponseError):
                parse_export_job(bad)
        assert ExportJob.from_dict({**job.as_dict(), "new": 1}) == job


# -- secrets --------------------------------------------------------------------------------------


class TestNoSecrets:
    def test_token_and_signature_absent_from_logs_and_errors(
        self,
        sb: Sandbox,
        hook: PeopleAIHook,
        caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str],
        tmp_path: Path,
    ) -> None:
        caplog.set_level(logging.DEBUG)
        errors: list[str] = []
        sb.export.refuse_next(1)
        job = completed(hook)
        path = sb.export.file_path(job.job_id)
        sb.faults.fail_next(1, status=503, path=path)
        sb.faults.invalid_json(1, path=path)
        list(hook.iter_export_records(job.job_id))
        sb.faults.invalid_json(10, path=path)
        with pytest.raises(PeopleAIAPIError) as cut:
            hook.download_export(job.job_id, tmp_path / "f")
        errors.append(str(cut.value) + repr(cut.value))
        # A file URL that cannot be reached: the transport's error names the URL.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        sb.export.settings.redirect_url = f"http://127.0.0.1:{port}/files/x.jsonl.gz?Expires=1&Signature=closed-port-sig"
        with pytest.raises(PeopleAIAPIError) as refused:
            hook.download_export(job.job_id, tmp_path / "f")
        errors.append(str(refused.value) + repr(refused.value))
        captured = capsys.readouterr()
        signature = sb.export._signed(job.job_id).split("Signature=")[1]
        assert tokens(sb)
        everything = "\n".join([captured.out, captured.err, caplog.text, *errors])
        for secret in [*tokens(sb), SECRET]:
            assert secret not in everything
        # urllib3's own DEBUG lines name whole URLs; the provider's logs and errors never do.
        # (Airflow 2's logging config also prints every record, urllib3's included, to stdout.)
        printed = [line for line in (captured.out + captured.err).splitlines() if "{connectionpool.py:" not in line]
        ours = "\n".join(
            [*printed, *errors, *(r.getMessage() for r in caplog.records if not r.name.startswith("urllib3"))]
        )
        for secret in (signature, "closed-port-sig"):
            assert secret not in ours
        assert "downloaded" in ours and "retry" in ours and "signed query omitted" in ours
