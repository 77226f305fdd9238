"""The sandbox's command line and its private /_sandbox endpoints, over real HTTP and real processes:
serve's knobs (page cap, max page size, export polls), add-activities, expected, expected-export and
stats against a sandbox in this process or in a CLI process, Basic authentication, and admin
requests kept out of the rate limit, the fault knobs and the request log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from airflow_provider_activities.testing.sandbox import Sandbox

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
MODULE = "airflow_provider_activities.testing.sandbox"
ACTIVITIES = "/v0/public/activities"
PARTICIPANTS = "/v0/public/activities/participants"
TOKEN = "/auth/v1/tokens"
JOBS = "/pull/v1/export/activities/jobs"
ADMIN = "/_sandbox"
Served = tuple[subprocess.Popen[str], dict[str, str]]


def day(n: int) -> datetime:
    """Midnight UTC of 2026-11-(1 + n)."""
    return START + timedelta(days=n)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the sandbox variables a developer may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEOPLEAI_")}
    return {**env, **extra}


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the sandbox's command line to completion."""
    return subprocess.run(
        [sys.executable, "-m", MODULE, *args], capture_output=True, text=True, timeout=120, env=env or clean_env()
    )


def bearer(base_url: str, client_id: str = "sandbox-client-id", client_secret: str = "sandbox-client-secret") -> dict[str, str]:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
    answer = requests.post(base_url + TOKEN, data=form, timeout=10)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A sandbox in this process: 800 activities over 4 days, no rate limit."""
    with Sandbox(seed=4, activities=800, days=4, rate_limit=None) as sb:
        yield sb
        assert sb.errors == []


@pytest.fixture
def served() -> Iterator[Served]:
    """A sandbox served by the command line in its own process, with the new knobs set; its
    printed ``KEY=value`` lines. Stopped with SIGTERM (killed if it does not stop).
    """
    command = [sys.executable, "-m", MODULE, "--port", "0", "--seed", "2", "--activities", "600", "--days", "3",
               "--no-rate-limit", "--page-cap", "40", "--max-page-size", "300", "--export-polls", "0"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().rstrip("\n").split("=", 1) for _ in range(4))
        yield process, lines
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ----- serve's knobs --------------------------------------------------------------------------------


def test_serve_knobs_cap_pages_bound_the_limit_and_finish_export_jobs_at_once(served: Served) -> None:
    _, lines = served
    base_url = lines["PEOPLEAI_SANDBOX_URL"]
    headers = bearer(base_url)
    page = requests.get(base_url + ACTIVITIES, params={"limit": 100}, headers=headers, timeout=10).json()
    assert len(page["data"]) == 40 and page["meta"]["limit"] == 100 and page["meta"]["total"] == 600  # --page-cap 40
    assert requests.get(base_url + ACTIVITIES, params={"limit": 300}, headers=headers, timeout=10).status_code == 200
    too_big = requests.get(base_url + ACTIVITIES, params={"limit": 301}, headers=headers, timeout=10)
    assert too_big.status_code == 400 and "between 1 and 300" in too_big.json()["message"]  # --max-page-size 300

    days = {"start_date": "2026-11-01", "end_date": "2026-11-02", "export_type": "snapshot"}
    job = requests.post(base_url + JOBS, json=days, headers=headers, timeout=10).json()
    assert job["state"] == "Queued"
    polled = requests.get(f"{base_url}{JOBS}/{job['job_id']}", headers=headers, timeout=30).json()
    assert polled["state"] == "Completed"  # --export-polls 0: done at the first poll


def test_serve_defaults_accept_pages_up_to_100000_like_the_api() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", MODULE, "--activities", "50", "--no-rate-limit"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().rstrip("\n").split("=", 1)[1]
        headers = bearer(base_url)
        assert requests.get(base_url + ACTIVITIES, params={"limit": 100_000}, headers=headers, timeout=10).status_code == 200
        assert requests.get(base_url + ACTIVITIES, params={"limit": 100_001}, headers=headers, timeout=10).status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["--page-cap", "0"], ["--page-cap", ">= 1"]),
        (["--max-page-size", "0"], ["--max-page-size", ">= 1"]),
        (["--export-polls", "-1"], ["--export-polls", ">= 0"]),
        (["--export-polls", "two"], ["--export-polls", "integer"]),
    ],
)
def test_serve_refuses_bad_knobs_before_serving(args: list[str], words: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    for word in words:
        assert word in result.stderr


def test_help_lists_the_subcommands() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for name in ("--export-polls", "--page-cap", "--max-page-size", "add-activities", "expected-export", "stats"):
        assert name in result.stdout


# ----- the /_sandbox endpoints -----------------------------------------------------------------------


def admin(sb: Sandbox, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, sb.url(ADMIN + path), auth=(sb.client_id, sb.client_secret), timeout=30, **kwargs)


def test_admin_endpoints_need_the_client_credentials(sandbox: Sandbox) -> None:
    body = {"count": 1}
    for auth in (None, (sandbox.client_id, "wrong"), ("someone", sandbox.client_secret)):
        answer = requests.post(sandbox.url(ADMIN + "/activities"), json=body, auth=auth, timeout=10)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Basic")
    token = {"Authorization": f"Bearer {sandbox.issue_token()}"}
    assert requests.get(sandbox.url(ADMIN + "/stats"), headers=token, timeout=10).status_code == 401
    assert requests.get(sandbox.url(ADMIN + "/stats"), headers={"Authorization": "Basic !!"}, timeout=10).status_code == 401
    assert sandbox.activity_count() == 800
    assert admin(sandbox, "GET", "/nothing").status_code == 404
    assert admin(sandbox, "GET", "/activities").status_code == 404  # POST only


def test_add_activities_over_a_day_reach_the_api_and_the_ground_truth(sandbox: Sandbox) -> None:
    before = sandbox.expected_activities(day(2), day(3), "call")
    answer = admin(sandbox, "POST", "/activities", json={"count": 24, "day": "2026-11-03", "activity_type": "call"})
    assert answer.status_code == 200, answer.text
    added = answer.json()["added"]
    assert len(added) == 24 and {a["activity_type"] for a in added} == {"call"}
    stamps = sorted(a["timestamp"] for a in added)
    assert stamps == [ms(day(2)) + 1_800_000 + hour * 3_600_000 for hour in range(24)]  # the middle of each hour
    after = sandbox.expected_activities(day(2), day(3), "call")
    assert len(after) == len(before) + 24 and {a["uid"] for a in added} <= {a["uid"] for a in after}
    served = requests.get(
        sandbox.url(f"{ACTIVITIES}/call"),
        params={"from": "2026-11-03", "to": "2026-11-03", "limit": "1000"},
        headers={"Authorization": f"Bearer {sandbox.issue_token()}"},
        timeout=10,
    ).json()["data"]
    assert served == after
    assert sandbox.stats["inserted"] == 24

    at = admin(sandbox, "POST", "/activities", json={"count": 2, "timestamp": "2026-11-02T05:00:00Z", "created_at": ms(day(3))})
    assert [a["timestamp"] for a in at.json()["added"]] == [ms(day(1)) + 5 * 3_600_000] * 2
    assert all(a["created_at"] == ms(day(3)) for a in at.json()["added"])


@pytest.mark.parametrize(
    "body, words",
    [
        ({}, ["count"]),
        ({"count": 0}, ["count", "from 1"]),
        ({"count": True}, ["count"]),
        ({"count": 1, "day": "2026-11-3"}, ["day", "YYYY-MM-DD"]),
        ({"count": 1, "day": "2026-11-03", "timestamp": 5}, ["day", "timestamp", "not both"]),
        ({"count": 1, "timestamp": "yesterday"}, ["timestamp", "ISO-8601"]),
        ({"count": 1, "activity_type": "sms"}, ["activity_type", "email"]),
        ({"count": 1, "when": "now"}, ["unknown fields", "when"]),
        ([1], ["JSON object"]),
    ],
)
def test_add_activities_refuses_bad_bodies(sandbox: Sandbox, body: Any, words: list[str]) -> None:
    answer = admin(sandbox, "POST", "/activities", json=body)
    assert answer.status_code == 400
    for word in words:
        assert word in answer.json()["message"]
    assert sandbox.activity_count() == 800


def test_expected_endpoint_is_the_ground_truth(sandbox: Sandbox) -> None:
    window = {"start": "2026-11-02", "end": "2026-11-03T12:00:00Z"}
    low, high = day(1), day(2) + timedelta(hours=12)
    answer = admin(sandbox, "GET", "/expected", params=window)
    assert answer.headers["Content-Type"].startswith("application/x-ndjson")
    assert json_lines(answer.text) == sandbox.expected_activities(low, high)
    typed = admin(sandbox, "GET", "/expected", params={**window, "type": "meeting", "by": "created_at"})
    assert json_lines(typed.text) == sandbox.expected_activities(low, high, "meeting", by="created_at")
    people = admin(sandbox, "GET", "/expected", params={**window, "records": "participants", "type": "email"})
    assert json_lines(people.text) == sandbox.expected_participants(low, high, "email")
    emails = sandbox.expected_activities(low, high, "email")
    assert {p["activity_uid"] for p in json_lines(people.text)} == {a["uid"] for a in emails}
    counts = admin(sandbox, "GET", "/expected", params={**window, "count": "1"}).json()
    assert counts == {"activities": sandbox.activity_count(low, high), "participants": sandbox.participant_count(low, high)}
    assert counts["activities"] > 100
    epoch = admin(sandbox, "GET", "/expected", params={"start": str(ms(low)), "end": str(ms(high)), "count": "1"}).json()
    assert epoch == counts


@pytest.mark.parametrize(
    "params, words",
    [
        ({"end": "2026-11-03"}, ["start is required"]),
        ({"start": "2026-11-02", "end": "soon"}, ["end must be"]),
        ({"start": "2026-11-02", "end": "2026-11-03", "type": "sms"}, ["type must be"]),
        ({"start": "2026-11-02", "end": "2026-11-03", "by": "uid"}, ["by must be"]),
        ({"start": "2026-11-02", "end": "2026-11-03", "records": "accounts"}, ["records must be"]),
    ],
)
def test_expected_endpoint_refuses_bad_parameters(sandbox: Sandbox, params: dict[str, str], words: list[str]) -> None:
    answer = admin(sandbox, "GET", "/expected", params=params)
    assert answer.status_code == 400
    for word in words:
        assert word in answer.json()["message"]


def test_expected_export_endpoint_is_the_export_ground_truth(sandbox: Sandbox) -> None:
    params = {"start_date": "2026-11-02", "end_date": "2026-11-03", "export_type": "delta", "activity_type": "email"}
    answer = admin(sandbox, "GET", "/expected-export", params=params)
    expected = sandbox.expected_export_records("2026-11-02", "2026-11-03", "delta", "email")
    assert json_lines(answer.text) == expected and expected
    assert admin(sandbox, "GET", "/expected-export", params={**params, "count": "yes"}).json() == {"records": len(expected)}
    bad = admin(sandbox, "GET", "/expected-export", params={**params, "export_type": "full"})
    assert bad.status_code == 400 and "export_type" in bad.json()["message"]
    bad = admin(sandbox, "GET", "/expected-export", params={"start_date": "2026-11-02"})
    assert bad.status_code == 400 and "end_date" in bad.json()["message"]


def test_admin_requests_skip_the_rate_limit_the_faults_and_the_log() -> None:
    with Sandbox(seed=1, activities=100, rate_limit=2.0, max_concurrency=1) as sb:
        sb.faults.fail_next(1, status=503)
        sb.faults.set_latency(0.2)
        for _ in range(6):
            assert admin(sb, "GET", "/stats").status_code == 200
            assert admin(sb, "GET", "/expected", params={"start": "2026-11-01", "end": "2026-11-02", "count": "1"}).ok
        assert admin(sb, "POST", "/activities", json={"count": 3}).status_code == 200
        assert sb.requests == [] and "requests" not in sb.stats
        sb.faults.set_latency(0)
        headers = bearer(sb.base_url, sb.client_id, sb.client_secret)
        # The fail_next knob was not used up by the admin requests, and the window holds one request.
        assert requests.get(sb.url(ACTIVITIES), params={"limit": 1}, headers=headers, timeout=10).status_code == 503
        assert [r.path for r in sb.requests] == [TOKEN, ACTIVITIES]
        stats = admin(sb, "GET", "/stats").json()
        assert stats["requests"] == sb.stats and stats["requests"]["inserted"] == 3
        assert stats["export"]["files_built"] == 0
        assert sb.errors == []


# ----- the subcommands, run as processes ----------------------------------------------------------------


def test_add_activities_subcommand(sandbox: Sandbox) -> None:
    before = sandbox.activity_count(day(2), day(3))
    result = cli("add-activities", "--url", sandbox.base_url, "--count", "50", "--day", "2026-11-03")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"added 50 activities, timestamps 2026-11-03T00:14:24\.000Z \.\. 2026-11-03T23:45:36\.000Z \(.*\)\n", result.stdout
    )
    assert sandbox.activity_count(day(2), day(3)) == before + 50

    result = cli("add-activities", "--url", sandbox.base_url, "--count", "3", "--timestamp", "2026-11-04T08:00:00Z",
                 "--type", "meeting", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    added = json_lines(result.stdout)
    assert len(added) == 3 and {a["timestamp"] for a in added} == {ms(day(3)) + 8 * 3_600_000}
    assert {a["uid"] for a in added} <= {a["uid"] for a in sandbox.expected_activities(day(3), day(4), "meeting")}


def test_expected_subcommand_prints_the_ground_truth(sandbox: Sandbox) -> None:
    window = ["--url", sandbox.base_url, "--start", "2026-11-02", "--end", "2026-11-03"]
    result = cli("expected", *window, "--type", "call")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == sandbox.expected_activities(day(1), day(2), "call")
    result = cli("expected", *window, "--participants")
    assert json_lines(result.stdout) == sandbox.expected_participants(day(1), day(2))
    result = cli("expected", *window, "--count-only", "--by", "created_at")
    counts = {"activities": sandbox.activity_count(day(1), day(2), by="created_at"),
              "participants": sandbox.participant_count(day(1), day(2), by="created_at")}  # fmt: skip
    assert json.loads(result.stdout) == counts and result.stdout.endswith("}\n")


def test_expected_export_and_stats_subcommands(sandbox: Sandbox) -> None:
    env = clean_env(PEOPLEAI_SANDBOX_URL=sandbox.base_url)  # --url from the environment, as serve prints it
    result = cli("expected-export", "--start-date", "2026-11-01", "--end-date", "2026-11-02", env=env)
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == sandbox.expected_export_records("2026-11-01", "2026-11-02")
    result = cli("expected-export", "--start-date", "2026-11-01", "--end-date", "2026-11-02", "--export-type", "delta",
                 "--type", "meeting", "--count-only", env=env)  # fmt: skip
    meetings = sandbox.expected_export_records("2026-11-01", "2026-11-02", "delta", "meeting")
    assert json.loads(result.stdout) == {"records": len(meetings)}
    result = cli("stats", env=env)
    assert result.returncode == 0 and set(json.loads(result.stdout)) == {"requests", "export"}


def test_subcommand_errors_say_what_to_fix(sandbox: Sandbox) -> None:
    window = ["--start", "2026-11-02", "--end", "2026-11-03"]
    result = cli("expected", *window)
    assert result.returncode == 2 and "--url is required" in result.stderr and "PEOPLEAI_SANDBOX_URL" in result.stderr
    result = cli("expected", "--url", sandbox.base_url, "--client-secret", "not-the-secret", *window)
    assert result.returncode == 1 and "401" in result.stderr and "--client-secret" in result.stderr
    assert "not-the-secret" not in result.stderr + result.stdout
    with Sandbox() as gone:
        closed = gone.base_url
    result = cli("stats", "--url", closed)
    assert result.returncode == 1 and f"cannot reach the sandbox at {closed}" in result.stderr
    result = cli("expected", "--url", sandbox.base_url + "/v0", *window)
    assert result.returncode == 2 and "base URL" in result.stderr
    result = cli("expected", "--url", sandbox.base_url, "--start", "2026-11-2", "--end", "2026-11-03")
    assert result.returncode == 2 and "--start" in result.stderr and "YYYY-MM-DD" in result.stderr
    result = cli("add-activities", "--url", sandbox.base_url, "--count", "1", "--day", "2026-11-03", "--timestamp", "5")
    assert result.returncode == 2 and "not allowed with" in result.stderr
    assert sandbox.activity_count() == 800


def test_subcommands_drive_a_sandbox_served_by_the_cli(served: Served) -> None:
    """The whole shell workflow: serve, add a day's activities, read them back, print the ground truth."""
    _, lines = served
    env = clean_env(**{k: v for k, v in lines.items() if k.startswith("PEOPLEAI_")})
    result = cli("add-activities", "--count", "30", "--day", "2026-11-05", "--type", "email", env=env)
    assert result.returncode == 0, result.stderr
    expected = json_lines(cli("expected", "--start", "2026-11-05", "--end", "2026-11-06", env=env).stdout)
    assert len(expected) == 30 and {a["activity_type"] for a in expected} == {"email"}  # past the 3 days of data
    base_url = lines["PEOPLEAI_SANDBOX_URL"]
    headers = bearer(base_url, lines["PEOPLEAI_CLIENT_ID"], lines["PEOPLEAI_CLIENT_SECRET"])
    served_records: list[dict[str, Any]] = []
    while len(served_records) < 30:  # pages of at most 40 (--page-cap)
        page = requests.get(
            base_url + ACTIVITIES,
            params={"from": "2026-11-05", "to": "2026-11-05", "offset": str(len(served_records)), "limit": "300"},
            headers=headers,
            timeout=10,
        ).json()
        assert page["data"]
        served_records += page["data"]
    assert served_records == expected
    counts = json.loads(cli("expected", "--start", "2026-11-05", "--end", "2026-11-06", "--count-only", env=env).stdout)
    assert counts["activities"] == 30 and counts["participants"] == sum(a["number_of_participants"] for a in expected)
