"""The sandbox's Raw Activity Data (bulk export) API over real HTTP: job states over polls, the
running/queued limits, range limits and the error envelope, failed and canceled jobs, the data as
a redirect to a gzip JSON Lines file on this host or on the second loopback "file host" (which
refuses a bearer token), the format knobs, and the ground truth against the Activity API.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from airflow_provider_activities.testing._export import MAX_REPROCESS_LAG_MS, ExportSettings
from airflow_provider_activities.testing.sandbox import Sandbox

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
JOBS = "/pull/v1/export/activities/jobs"
TOKEN = "/auth/v1/tokens"
DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """One sandbox for the module: 600 activities over 4 days from 2026-11-01, no rate limit."""
    with Sandbox(seed=5, activities=600, start=START, days=4, rate_limit=None) as sb:
        yield sb
        assert sb.errors == []


@pytest.fixture
def sb(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The module's sandbox with default export knobs; every job left over is expired afterwards
    (so the queued limit of one test never reaches the next).
    """
    sandbox.export.settings = ExportSettings()
    sandbox.faults.reset()
    yield sandbox
    for job in sandbox.export.jobs:
        if not job.expired:
            sandbox.export.expire(job.job_id)
    sandbox.export.settings = ExportSettings()


@pytest.fixture(scope="module")
def http(sandbox: Sandbox) -> Iterator[requests.Session]:
    """A session carrying a bearer token got over HTTP."""
    with requests.Session() as s:
        answer = s.post(
            sandbox.url(TOKEN),
            data={"grant_type": "client_credentials", "client_id": sandbox.client_id, "client_secret": sandbox.client_secret},
        )
        assert answer.status_code == 200, answer.text
        s.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield s


def body(start: str = "2026-11-01", end: str = "2026-11-02", export_type: str = "snapshot", **extra: Any) -> dict[str, Any]:
    """A job creation body."""
    return {
        "start_date": start,
        "end_date": end,
        "activity_type": "all",
        "output_format": "JSONLines",
        "export_type": export_type,
        **extra,
    }


def create(http: requests.Session, sb: Sandbox, **kwargs: Any) -> dict[str, Any]:
    """Create a job; assert it was accepted; its answer."""
    answer = http.post(sb.url(JOBS), json=body(**kwargs))
    assert answer.status_code == 200, answer.text
    return answer.json()


def poll(http: requests.Session, sb: Sandbox, job_id: str) -> dict[str, Any]:
    """One status poll."""
    answer = http.get(sb.url(f"{JOBS}/{job_id}"))
    assert answer.status_code == 200, answer.text
    return answer.json()


def assert_envelope(answer: requests.Response, status: int, path: str, *words: str) -> dict[str, Any]:
    """The vendor's error envelope, with ``words`` in its message."""
    assert answer.status_code == status, answer.text
    envelope = answer.json()
    assert set(envelope) == {"code", "id", "message", "path", "timestamp"}
    assert envelope["code"] == status and envelope["path"] == path
    datetime.strptime(envelope["timestamp"], "%d-%m-%Y %H:%M:%S")
    for word in words:
        assert word in envelope["message"], envelope
    return envelope


def finished_job(http: requests.Session, sb: Sandbox, **kwargs: Any) -> str:
    """A job polled to ``Completed`` (with ``polls = 0``)."""
    sb.export.settings.polls = 0
    job_id = create(http, sb, **kwargs)["job_id"]
    assert poll(http, sb, job_id)["state"] == "Completed"
    return job_id


def lines(data: bytes) -> list[dict[str, Any]]:
    """JSON Lines (gzip or not, by magic bytes) as records."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def download(http: requests.Session, sb: Sandbox, job_id: str, bearer_to_files: bool = False) -> requests.Response:
    """The data endpoint, then its redirect by hand (the bearer token only where asked)."""
    answer = http.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False)
    if answer.status_code != 302:
        return answer
    target = answer.headers["Location"]
    if target.startswith("/"):
        target = sb.base_url + target
    headers = {"Authorization": http.headers["Authorization"]} if bearer_to_files else {}
    return requests.get(target, headers=headers)


def iso_ms(value: Any) -> int:
    """Epoch ms of a served time (ISO with ``Z`` or ``+00:00``, or epoch ms)."""
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


# -- states ---------------------------------------------------------------------------------------


class TestStates:
    def test_queued_then_running_then_completed_over_polls(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.polls = 4
        job = create(http, sb, start="2026-11-02", end="2026-11-03", export_type="delta", activity_type="email")
        assert job["state"] == "Queued"
        assert job["export_type"] == "delta" and job["activity_type"] == "email" and job["output_format"] == "JSONLines"
        assert (job["start_date"], job["end_date"]) == ("2026-11-02", "2026-11-03")
        assert job["job_start_time"] is None and job["job_end_time"] is None
        datetime.strptime(job["job_created_time"], "%Y-%m-%dT%H:%M:%SZ")
        states = [poll(http, sb, job["job_id"]) for _ in range(6)]
        assert [s["state"] for s in states] == ["Queued", "Queued", "Running", "Running", "Completed", "Completed"]
        assert states[1]["job_start_time"] is None
        assert states[2]["job_start_time"] is not None and states[2]["job_end_time"] is None
        datetime.strptime(states[4]["job_end_time"], "%Y-%m-%dT%H:%M:%SZ")

    def test_zero_polls_ends_at_the_first_poll(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.polls = 0
        job = create(http, sb)
        assert poll(http, sb, job["job_id"])["state"] == "Completed"

    def test_no_data_before_completed(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.polls = 3
        job_id = create(http, sb)["job_id"]
        path = f"{JOBS}/{job_id}/data"
        assert_envelope(http.get(sb.url(path), allow_redirects=False), 400, path, "Queued", "not Completed")

    @pytest.mark.parametrize("state", ["Failed", "Canceled"])
    def test_fail_next_ends_the_job_so_without_data(self, sb: Sandbox, http: requests.Session, state: str) -> None:
        sb.export.settings.polls = 1
        sb.export.fail_next(1, state=state)
        failing = create(http, sb)["job_id"]
        fine = create(http, sb)["job_id"]
        assert [poll(http, sb, failing)["state"] for _ in range(3)] == ["Running", state, state]
        assert poll(http, sb, fine)["state"] == "Running"
        assert poll(http, sb, fine)["state"] == "Completed"
        path = f"{JOBS}/{failing}/data"
        assert_envelope(http.get(sb.url(path), allow_redirects=False), 400, path, state)

    def test_fail_next_takes_failed_or_canceled_only(self, sb: Sandbox) -> None:
        with pytest.raises(ValueError, match="Failed"):
            sb.export.fail_next(1, state="Completed")

    def test_set_state_cancels_a_running_job(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.polls = 4
        job_id = create(http, sb)["job_id"]
        sb.export.set_state(job_id, "Canceled")
        answer = poll(http, sb, job_id)
        assert answer["state"] == "Canceled" and answer["job_end_time"] is not None
        assert poll(http, sb, job_id)["state"] == "Canceled"
        with pytest.raises(ValueError):
            sb.export.set_state(job_id, "Done")

    def test_set_state_completed_makes_the_data(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.polls = 50
        job_id = create(http, sb)["job_id"]
        sb.export.set_state(job_id, "Completed")
        answer = download(http, sb, job_id)
        assert answer.status_code == 200
        assert lines(answer.content) == sb.export_file_records("2026-11-01", "2026-11-02")

    def test_expired_job_answers_404(self, sb: Sandbox, http: requests.Session) -> None:
        job_id = finished_job(http, sb)
        sb.export.expire(job_id)
        for path in (f"{JOBS}/{job_id}", f"{JOBS}/{job_id}/data"):
            assert_envelope(http.get(sb.url(path), allow_redirects=False), 404, path, job_id, "not found")

    def test_malformed_and_unknown_paths(self, sb: Sandbox, http: requests.Session) -> None:
        assert_envelope(http.get(sb.url(f"{JOBS}/nope")), 400, f"{JOBS}/nope", "Malformed job id")
        job_id = finished_job(http, sb)
        path = f"{JOBS}/{job_id}/other"
        assert_envelope(http.get(sb.url(path)), 404, path)
        assert http.delete(sb.url(f"{JOBS}/{job_id}")).status_code == 404

    def test_token_required(self, sb: Sandbox, http: requests.Session) -> None:
        assert_envelope(requests.post(sb.url(JOBS), json=body()), 401, JOBS)
        job_id = finished_job(http, sb)
        assert requests.get(sb.url(f"{JOBS}/{job_id}")).status_code == 401
        assert requests.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False).status_code == 401

    def test_jobs_lists_every_job_in_order(self, sb: Sandbox, http: requests.Session) -> None:
        before = len(sb.export.jobs)
        first = create(http, sb)["job_id"]
        second = create(http, sb, export_type="delta")["job_id"]
        jobs = sb.export.jobs[before:]
        assert [j.job_id for j in jobs] == [first, second]
        assert [j.export_type for j in jobs] == ["snapshot", "delta"]
        assert jobs[0].start_date == date(2026, 11, 1)


# -- limits ---------------------------------------------------------------------------------------


class TestLimits:
    def test_at_most_two_running_a_third_waits_queued(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.polls = 2
        sb.export.peak_running = 0
        ids = [create(http, sb)["job_id"] for _ in range(3)]
        rounds = [[poll(http, sb, job_id)["state"] for job_id in ids] for _ in range(2)]
        assert rounds == [["Queued"] * 3, ["Running", "Running", "Queued"]]
        assert [poll(http, sb, j)["state"] for j in ids[:2]] == ["Completed", "Completed"]
        assert sb.export.peak_running == 2
        # Its first poll counted (nothing ran then): one poll Running, the next Completed.
        assert [poll(http, sb, ids[2])["state"] for _ in range(2)] == ["Running", "Completed"]
        assert sb.export.peak_running == 2

    def test_queued_polls_do_not_count_while_two_run(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.polls = 2
        ids = [create(http, sb)["job_id"] for _ in range(3)]
        for job_id in ids[:2]:
            poll(http, sb, job_id)
            poll(http, sb, job_id)
        assert [poll(http, sb, ids[2])["state"] for _ in range(5)] == ["Queued"] * 5

    @pytest.mark.parametrize("status", [429, 400])
    def test_eleventh_queued_job_is_refused(self, sb: Sandbox, http: requests.Session, status: int) -> None:
        sb.export.settings.limit_status = status
        for _ in range(10):
            create(http, sb)
        envelope = assert_envelope(http.post(sb.url(JOBS), json=body()), status, JOBS, "Too many export jobs", "10 queued")
        assert envelope["message"]
        assert "Retry-After" not in http.post(sb.url(JOBS), json=body()).headers
        assert sb.export.peak_active == max(sb.export.peak_active, 10)
        # A job that leaves the queue makes room again.
        sb.export.expire(sb.export.jobs[-1].job_id)
        create(http, sb)

    def test_refuse_next(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.refuse_next(1)
        sb.export.refuse_next(1, status=400, message="Export job limit reached")
        assert_envelope(http.post(sb.url(JOBS), json=body()), 429, JOBS, "Too many export jobs")
        assert_envelope(http.post(sb.url(JOBS), json=body()), 400, JOBS, "Export job limit reached")
        create(http, sb)
        refused = [r for r in sb.requests if r.path == JOBS and r.fault == "export_limit"]
        assert len(refused) >= 2


class TestRanges:
    @pytest.mark.parametrize(
        "export_type, days, ok",
        [("snapshot", 365, True), ("snapshot", 366, False), ("delta", 14, True), ("delta", 15, False), ("delta", 1, True)],
    )
    def test_range_limits(self, sb: Sandbox, http: requests.Session, export_type: str, days: int, ok: bool) -> None:
        first = date(2025, 12, 1)
        last = first + timedelta(days=days - 1)
        answer = http.post(sb.url(JOBS), json=body(first.isoformat(), last.isoformat(), export_type))
        if ok:
            assert answer.status_code == 200, answer.text
        else:
            limit = 365 if export_type == "snapshot" else 14
            assert_envelope(answer, 400, JOBS, f"{days} days", f"maximum of {limit} days", export_type)

    @pytest.mark.parametrize(
        "changes, words",
        [
            ({"start_date": "2026-11-03", "end_date": "2026-11-01"}, ["end_date must not be before start_date"]),
            ({"start_date": "2026/11/01"}, ["start_date", "yyyy-MM-dd"]),
            ({"end_date": "2026-02-30"}, ["end_date", "yyyy-MM-dd"]),
            ({"end_date": None}, ["end_date"]),
            ({"export_type": "full"}, ["export_type"]),
            ({"activity_type": "sms"}, ["activity_type"]),
            ({"output_format": "CSV"}, ["JSONLines", "CSV"]),
        ],
    )
    def test_bad_bodies(self, sb: Sandbox, http: requests.Session, changes: dict[str, Any], words: list[str]) -> None:
        assert_envelope(http.post(sb.url(JOBS), json={**body(), **changes}), 400, JOBS, *words)

    def test_body_not_json(self, sb: Sandbox, http: requests.Session) -> None:
        assert_envelope(http.post(sb.url(JOBS), data=b"[1, 2"), 400, JOBS, "JSON object")
        assert_envelope(http.post(sb.url(JOBS), json=[body()]), 400, JOBS, "JSON object")

    def test_defaults_activity_type_and_format(self, sb: Sandbox, http: requests.Session) -> None:
        answer = http.post(sb.url(JOBS), json={"start_date": "2026-11-01", "end_date": "2026-11-01", "export_type": "delta"})
        assert answer.status_code == 200
        assert answer.json()["activity_type"] == "all" and answer.json()["output_format"] == "JSONLines"


# -- the data -------------------------------------------------------------------------------------


class TestData:
    def test_same_host_redirect_to_a_signed_gzip_file(self, sb: Sandbox, http: requests.Session) -> None:
        job_id = finished_job(http, sb)
        answer = http.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False)
        assert answer.status_code == 302
        location = answer.headers["Location"]
        parts = urlsplit(location)
        assert parts.path == f"/pull/v1/export/files/{job_id}.jsonl.gz" and not parts.netloc
        assert "Signature=" in parts.query and "Expires=" in parts.query
        before = len(sb.export.file_requests)
        got = requests.get(sb.base_url + location, headers={"Authorization": http.headers["Authorization"]})
        assert got.status_code == 200
        assert got.headers["Content-Type"] == "application/gzip" and "Content-Encoding" not in got.headers
        assert got.content[:2] == b"\x1f\x8b"
        assert lines(got.content) == sb.export_file_records("2026-11-01", "2026-11-02")
        (record,) = sb.export.file_requests[before:]
        assert (record.host, record.authorization, record.status) == ("127.0.0.1", True, 200)
        assert sb.export.jobs[-1].downloads == 1

    def test_other_host_refuses_a_bearer_token(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.redirect = "other_host"
        job_id = finished_job(http, sb)
        answer = http.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False)
        location = answer.headers["Location"]
        assert answer.status_code == 302 and location.startswith(sb.file_host_url + "/pull/v1/export/files/")
        file_host = urlsplit(sb.file_host_url).hostname
        assert file_host == "127.0.0.2" or file_host == "127.0.0.1"
        before = len(sb.export.file_requests)
        path = urlsplit(location).path
        refused = requests.get(location, headers={"Authorization": http.headers["Authorization"]})
        assert_envelope(refused, 400, path, "Only one auth mechanism")
        got = requests.get(location)
        assert got.status_code == 200
        assert lines(got.content) == sb.export_file_records("2026-11-01", "2026-11-02")
        assert [(r.host, r.authorization, r.status) for r in sb.export.file_requests[before:]] == [
            (file_host, True, 400),
            (file_host, False, 200),
        ]

    def test_file_host_serves_signed_files_only(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.redirect = "other_host"
        job_id = finished_job(http, sb)
        location = http.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False).headers["Location"]
        path = urlsplit(location).path
        assert_envelope(requests.get(location.replace("Signature=", "Signature=0")), 403, path, "Signature")
        assert requests.get(sb.file_host_url + path).status_code == 403
        assert requests.get(sb.file_host_url + JOBS).status_code == 404
        assert requests.post(location).status_code == 404
        other = f"/pull/v1/export/files/{'0' * 8}-0000-0000-0000-{'0' * 12}.jsonl.gz"
        assert requests.get(sb.file_host_url + other + "?" + urlsplit(location).query).status_code == 403
        assert requests.get(sb.file_host_url + "/pull/v1/export/files/x.csv").status_code == 404

    def test_signed_url_of_an_expired_job(self, sb: Sandbox, http: requests.Session) -> None:
        job_id = finished_job(http, sb)
        location = http.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False).headers["Location"]
        sb.export.expire(job_id)
        assert requests.get(sb.base_url + location).status_code == 404

    def test_data_in_the_answer_itself(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.redirect = None
        job_id = finished_job(http, sb)
        answer = http.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False)
        assert answer.status_code == 200 and answer.content[:2] == b"\x1f\x8b"
        assert lines(answer.content) == sb.export_file_records("2026-11-01", "2026-11-02")

    def test_plain_json_lines(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.gzip = False
        job_id = finished_job(http, sb)
        location = http.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False).headers["Location"]
        assert urlsplit(location).path.endswith(f"{job_id}.jsonl")
        got = requests.get(sb.base_url + location)
        assert got.headers["Content-Type"] == "application/x-ndjson"
        assert got.content.endswith(b"\n") and got.content[:1] == b"{"
        assert lines(got.content) == sb.export_file_records("2026-11-01", "2026-11-02")

    def test_content_encoding_gzip(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.content_encoding = True
        job_id = finished_job(http, sb)
        got = download(http, sb, job_id)
        assert got.headers["Content-Encoding"] == "gzip" and got.headers["Content-Type"] == "application/x-ndjson"
        assert got.raw is not None
        assert lines(got.content) == sb.export_file_records("2026-11-01", "2026-11-02")

    def test_format_knobs_are_fixed_when_the_file_is_written(self, sb: Sandbox, http: requests.Session) -> None:
        """A job's file is written once: knobs changed after it completed do not change what is served."""
        job_id = finished_job(http, sb)
        expected = sb.export_file_records("2026-11-01", "2026-11-02")
        sb.export.settings.gzip = False
        sb.export.settings.timestamp_format = "epoch_ms"
        location = http.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False).headers["Location"]
        got = requests.get(sb.base_url + location)
        assert got.status_code == 200
        assert got.content[:2] == b"\x1f\x8b" and got.headers["Content-Type"] == "application/gzip"
        assert urlsplit(location).path.endswith(".jsonl.gz")
        assert lines(got.content) == expected

    def test_redirect_url_knob(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.redirect_url = "http://203.0.113.9/file.jsonl.gz"
        job_id = finished_job(http, sb)
        answer = http.get(sb.url(f"{JOBS}/{job_id}/data"), allow_redirects=False)
        assert answer.status_code == 302 and answer.headers["Location"] == "http://203.0.113.9/file.jsonl.gz"

    def test_same_bytes_for_the_same_days(self, sb: Sandbox, http: requests.Session) -> None:
        first = download(http, sb, finished_job(http, sb, start="2026-11-02", end="2026-11-03")).content
        second = download(http, sb, finished_job(http, sb, start="2026-11-02", end="2026-11-03")).content
        assert first == second and len(first) > 1000

    def test_body_faults_apply_to_the_file(self, sb: Sandbox, http: requests.Session) -> None:
        job_id = finished_job(http, sb)
        path = sb.export.file_path(job_id)
        sb.faults.invalid_json(1, path=path)
        cut = download(http, sb, job_id)
        whole = download(http, sb, job_id)
        assert cut.status_code == whole.status_code == 200
        assert len(cut.content) == len(whole.content) // 2
        with pytest.raises(EOFError):
            gzip.decompress(cut.content)


# -- the files: built once, kept while used, their rate reported ------------------------------------


class TestFiles:
    def test_jobs_of_the_same_content_share_one_build(self, sb: Sandbox, http: requests.Session) -> None:
        sb.add_activities(5, timestamp=datetime(2026, 11, 12, 9, tzinfo=UTC))  # days no other test exports
        before = sb.export.stats()
        first = finished_job(http, sb, start="2026-11-12", end="2026-11-12")
        second = finished_job(http, sb, start="2026-11-12", end="2026-11-12")
        after = sb.export.stats()
        assert (after["files_built"], after["reused"]) == (before["files_built"] + 1, before["reused"] + 1)
        old_bytes = download(http, sb, first).content
        assert download(http, sb, second).content == old_bytes and len(lines(old_bytes)) == 5

        sb.export.settings.timestamp_format = "epoch_ms"  # another knob: another file
        by_ms = finished_job(http, sb, start="2026-11-12", end="2026-11-12")
        assert all(isinstance(r["timestamp"], int) for r in lines(download(http, sb, by_ms).content))
        sb.export.settings.timestamp_format = "iso"
        sb.add_activities(2, timestamp=datetime(2026, 11, 12, 10, tzinfo=UTC))  # new data: another file
        fresh = finished_job(http, sb, start="2026-11-12", end="2026-11-12")
        assert len(lines(download(http, sb, fresh).content)) == 7
        assert sb.export.stats()["files_built"] == before["files_built"] + 3
        assert download(http, sb, first).content == old_bytes  # a job keeps the file it completed with

    def test_stats_report_what_was_built_and_how_fast(self, sb: Sandbox, http: requests.Session) -> None:
        before = sb.export.stats()
        job_id = finished_job(http, sb, start="2026-11-03", end="2026-11-04", export_type="delta")
        stats = sb.export.stats()
        body = download(http, sb, job_id).content
        records = sb.export_file_records("2026-11-03", "2026-11-04", "delta")
        last = stats["last_build"]
        assert (last["records"], last["bytes"]) == (len(records), len(body)) and len(records) > 50
        assert last["seconds"] > 0 and last["records_per_second"] == round(len(records) / last["seconds"])
        assert stats["records_written"] - before["records_written"] == len(records)
        assert stats["bytes_written"] - before["bytes_written"] == len(body)
        assert stats["build_seconds"] >= before["build_seconds"] + last["seconds"] - 1e-3
        assert lines(body) == records

    def test_a_job_answers_running_until_its_file_is_built(self) -> None:
        with Sandbox(seed=8, activities=40_000, start=START, days=4, rate_limit=None) as big, requests.Session() as s:
            form = {"grant_type": "client_credentials", "client_id": big.client_id, "client_secret": big.client_secret}
            s.headers["Authorization"] = f"Bearer {s.post(big.url(TOKEN), data=form).json()['access_token']}"
            big.export.settings.polls = 0
            big.export.settings.build_wait = 0  # answer at once, built or not
            job_id = create(s, big, start="2026-11-02", end="2026-11-02")["job_id"]
            assert poll(s, big, job_id)["state"] == "Running"  # about 10,000 records take a while
            path = f"{JOBS}/{job_id}/data"
            assert_envelope(s.get(big.url(path), allow_redirects=False), 400, path, "Running", "not Completed")
            big.export.settings.build_wait = 120
            done = poll(s, big, job_id)
            assert done["state"] == "Completed" and done["job_end_time"] is not None
            assert lines(download(s, big, job_id).content) == big.export_file_records("2026-11-02", "2026-11-02")
            assert big.export.stats()["files_built"] == 1
            assert big.errors == []

    def test_files_no_live_job_holds_are_deleted_beyond_the_last_few(self, sb: Sandbox, http: requests.Session) -> None:
        sb.export.settings.unknown_fields = False  # files no other test builds
        ids = [finished_job(http, sb, start=f"2026-11-0{n}", end=f"2026-11-0{n}", export_type=kind)
               for n in (1, 2, 3) for kind in ("snapshot", "delta")]  # fmt: skip
        paths = [job.build.wait(0).path for job in sb.export.jobs[-6:]]  # type: ignore[union-attr]
        assert all(os.path.exists(path) for path in paths)
        kept = sb.export.stats()["files_on_disk"]
        for job_id in ids:
            sb.export.expire(job_id)
        assert sb.export.stats()["files_on_disk"] == 4 <= kept  # ExportFiles.keep
        assert [os.path.exists(path) for path in paths] == [False, False, True, True, True, True]


# -- ground truth ---------------------------------------------------------------------------------


class TestGroundTruth:
    def test_snapshot_holds_the_activities_of_its_days(self, sb: Sandbox) -> None:
        expected = sb.expected_export_records("2026-11-02", "2026-11-03", "snapshot")
        activities = sb.expected_activities(START + timedelta(days=1), START + timedelta(days=3))
        assert len(expected) == len(activities) > 100
        by_uid = {a["uid"]: a for a in activities}
        assert {r["uid"] for r in expected} == set(by_uid)
        for record in expected:
            activity = by_uid[record["uid"]]
            assert iso_ms(record["timestamp"]) == activity["timestamp"] - activity["timestamp"] % 1000
            assert iso_ms(record["created"]) == activity["created_at"] - activity["created_at"] % 1000
            assert record["type"] == activity["activity_type"]
            assert record["source_id"] == activity["activity_source_id"]
            assert record["stats"]["total_participants"] == len(record["participants"])
            assert iso_ms(record["ingest_timestamp"]) >= iso_ms(record["created"])
        times = [(iso_ms(r["timestamp"]), r["uid"]) for r in expected]
        assert times == sorted(times)

    def test_snapshot_file_is_the_ground_truth_without_knobs(self, sb: Sandbox) -> None:
        file_records = sb.export_file_records("2026-11-01", "2026-11-04", "snapshot")
        expected = sb.expected_export_records("2026-11-01", "2026-11-04", "snapshot")
        assert sorted(file_records, key=lambda r: r["uid"]) == sorted(expected, key=lambda r: r["uid"])
        reprocessed = [r for r in expected if "reprocessed" in r["tags"]]
        assert 0 < len(reprocessed) < len(expected) / 4
        assert all(r["crm_status"]["pushed"] for r in reprocessed)

    def test_delta_holds_every_version_ingested_in_its_days(self, sb: Sandbox) -> None:
        first, last = date(2026, 11, 2), date(2026, 11, 3)
        low, high = day_ms(first), day_ms(last) + DAY_MS
        file_records = sb.export_file_records(first, last, "delta")
        assert all(low <= iso_ms(r["ingest_timestamp"]) < high for r in file_records)
        created = sb.expected_activities(low, high, by="created_at")
        firsts = [r["uid"] for r in file_records if "reprocessed" not in r["tags"]]
        assert sorted(firsts) == sorted(a["uid"] for a in created)
        earlier = {a["uid"] for a in sb.expected_activities(low - MAX_REPROCESS_LAG_MS, high, by="created_at")}
        seconds = [r["uid"] for r in file_records if "reprocessed" in r["tags"]]
        assert seconds and set(seconds) <= earlier and len(set(seconds)) == len(seconds)
        keys = [(iso_ms(r["ingest_timestamp"]), r["uid"]) for r in file_records]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        # The ground truth: one version per uid and ingest day, the latest.
        latest: dict[tuple[int, str], dict[str, Any]] = {}
        for record in file_records:
            latest[(iso_ms(record["ingest_timestamp"]) // DAY_MS, record["uid"])] = record
        expected = sb.expected_export_records(first, last, "delta")
        assert expected == sorted(latest.values(), key=lambda r: (iso_ms(r["ingest_timestamp"]), r["uid"]))

    def test_stale_duplicates_follow_the_latest(self, sb: Sandbox) -> None:
        sb.export.settings.stale_duplicates = True
        file_records = sb.export_file_records("2026-11-01", "2026-11-04", "snapshot")
        expected = sb.expected_export_records("2026-11-01", "2026-11-04", "snapshot")
        assert len(file_records) > len(expected)
        seen: dict[str, dict[str, Any]] = {}
        for record in file_records:
            if record["uid"] in seen:
                latest = seen[record["uid"]]
                assert iso_ms(record["ingest_timestamp"]) < iso_ms(latest["ingest_timestamp"])
                assert "reprocessed" in latest["tags"] and "reprocessed" not in record["tags"]
            else:
                seen[record["uid"]] = record
        assert sorted(seen.values(), key=lambda r: r["uid"]) == sorted(expected, key=lambda r: r["uid"])

    def test_spill_days_write_records_outside_the_days(self, sb: Sandbox) -> None:
        sb.export.settings.spill_days = 1
        low, high = day_ms(date(2026, 11, 2)), day_ms(date(2026, 11, 3))
        file_records = sb.export_file_records("2026-11-02", "2026-11-02", "snapshot")
        outside = [r for r in file_records if not low <= iso_ms(r["timestamp"]) < high]
        assert outside and len(outside) < len(file_records)
        assert all(low - DAY_MS <= iso_ms(r["timestamp"]) < high + DAY_MS for r in outside)
        expected = sb.expected_export_records("2026-11-02", "2026-11-02", "snapshot")
        assert sorted(r["uid"] for r in expected) == sorted(r["uid"] for r in file_records if r not in outside)

    def test_timestamp_formats(self, sb: Sandbox) -> None:
        sb.export.settings.timestamp_format = "epoch_ms"
        as_ms = sb.export_file_records("2026-11-02", "2026-11-02")
        assert all(type(r["timestamp"]) is int and r["timestamp"] % 1000 == 0 for r in as_ms)
        sb.export.settings.timestamp_format = "mixed"
        mixed = sb.export_file_records("2026-11-02", "2026-11-02")
        forms = {type(r["timestamp"]).__name__ + (r["timestamp"][-1] if isinstance(r["timestamp"], str) else "") for r in mixed}
        assert forms == {"int", "strZ", "str0"}
        for a, b in zip(as_ms, mixed, strict=False):
            assert iso_ms(b["timestamp"]) == a["timestamp"] and iso_ms(b["ingest_timestamp"]) == a["ingest_timestamp"]
            if a["crm_status"]["push_time"] is not None:
                assert iso_ms(b["crm_status"]["push_time"]) == a["crm_status"]["push_time"]
        sb.export.settings.timestamp_format = "iso"
        iso = sb.export_file_records("2026-11-02", "2026-11-02")
        assert all(r["timestamp"].endswith("Z") and len(r["timestamp"]) == 20 for r in iso)

    def test_unknown_fields_knob(self, sb: Sandbox) -> None:
        with_account = sb.export_file_records("2026-11-02", "2026-11-02")
        assert any("account" in r for r in with_account)
        sb.export.settings.unknown_fields = False
        without = sb.export_file_records("2026-11-02", "2026-11-02")
        assert not any("account" in r for r in without)
        assert [{k: v for k, v in r.items() if k != "account"} for r in with_account] == without

    def test_activity_type(self, sb: Sandbox) -> None:
        emails = sb.expected_export_records("2026-11-01", "2026-11-04", "snapshot", "email")
        everything = sb.expected_export_records("2026-11-01", "2026-11-04", "snapshot")
        assert emails == [r for r in everything if r["type"] == "email"]
        assert all("subject" in r and "summary" not in r for r in emails)
        meetings = sb.expected_export_records("2026-11-01", "2026-11-04", "snapshot", "meeting")
        assert meetings and all({"start_time", "end_time", "location", "all_day"} <= r.keys() for r in meetings)

    def test_bad_ground_truth_arguments(self, sb: Sandbox) -> None:
        with pytest.raises(ValueError, match="export_type"):
            sb.expected_export_records("2026-11-01", "2026-11-02", "full")
        with pytest.raises(ValueError, match="activity_type"):
            sb.export_file_records("2026-11-01", "2026-11-02", "delta", "sms")
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            sb.expected_export_records("11/01/2026", "2026-11-02")

    def test_live_inserts_reach_the_export(self, sb: Sandbox, http: requests.Session) -> None:
        before = {r["uid"] for r in sb.expected_export_records("2026-11-10", "2026-11-10")}
        added = sb.add_activities(3, timestamp=datetime(2026, 11, 10, 12, tzinfo=UTC), activity_type="call")
        expected = sb.expected_export_records("2026-11-10", "2026-11-10")
        assert {r["uid"] for r in expected} - before == {a["uid"] for a in added}
        job_id = finished_job(http, sb, start="2026-11-10", end="2026-11-10")
        assert lines(download(http, sb, job_id).content) == expected
