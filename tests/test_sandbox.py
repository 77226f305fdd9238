"""The sandbox People.ai API, over real HTTP: auth, pagination, filters, faults, determinism, CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from airflow_provider_activities.testing.sandbox import Sandbox

pytest_plugins = ["pytester", "airflow_provider_activities.testing.pytest_plugin"]

UTC = timezone.utc
START = datetime(2026, 11, 1, tzinfo=UTC)
ACTIVITIES = "/v0/public/activities"
PARTICIPANTS = "/v0/public/activities/participants"
TOKEN = "/auth/v1/tokens"
ACTIVITY_FIELDS = [
    "crm_id", "user_id", "is_partner", "with_partner", "opportunity_id", "opportunity_ids",
    "opportunity_crm_id", "opportunity_crm_ids", "opportunity_stage_id", "account_id", "account_crm_id",
    "matched_to", "lead_id", "lead_crm_id", "created_at", "activity_type", "subtype", "timestamp", "external",
    "uid", "activity_source_id", "direction", "meeting_start_time", "meeting_end_time", "meeting_status",
    "in_reply_to_source_id", "outbound_phone_number", "duration", "number_of_participants",
]  # fmt: skip
PARTICIPANT_FIELDS = [
    "user_id", "id", "name", "email", "job_title", "phone_number", "seniority", "department", "external",
    "original", "status", "source_id", "is_originator", "activity_uid", "activity_crm_id", "account_id",
    "account_crm_id", "opportunity_id", "opportunity_crm_id", "lead_id", "lead_crm_id", "activity_timestamp",
    "created_at", "deleted", "duration",
]  # fmt: skip


def day(n: int) -> datetime:
    """Midnight UTC of 2026-11-(1 + n)."""
    return START + timedelta(days=n)


def session(sandbox: Sandbox) -> requests.Session:
    """A keep-alive session holding a token got over HTTP."""
    s = requests.Session()
    answer = s.post(
        sandbox.url(TOKEN),
        data={"grant_type": "client_credentials", "client_id": sandbox.client_id, "client_secret": sandbox.client_secret},
    )
    assert answer.status_code == 200, answer.text
    s.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return s


def fetch_all(s: requests.Session, sandbox: Sandbox, path: str, limit: int = 1000, **params: Any) -> list[dict]:
    """Every record of a path, page by page, checking meta on the way."""
    records: list[dict] = []
    offset = 0
    while True:
        answer = s.get(sandbox.url(path), params={**params, "offset": offset, "limit": limit})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["meta"]["offset"] == offset and body["meta"]["limit"] == limit and body["meta"]["message"] is None
        page = body["data"]
        if not page:
            assert offset >= body["meta"]["total"]
            return records
        records.extend(page)
        offset += len(page)


def assert_error_envelope(answer: requests.Response, status: int, path: str) -> dict:
    assert answer.status_code == status
    body = answer.json()
    assert set(body) == {"code", "id", "message", "path", "timestamp"}
    assert body["code"] == status and body["path"] == path and body["id"] and body["message"]
    assert re.fullmatch(r"\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2}", body["timestamp"])
    return body


# ----- auth -------------------------------------------------------------------------------------------


def test_token_endpoint_takes_form_credentials_only(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    form = {"grant_type": "client_credentials", "client_id": sb.client_id, "client_secret": sb.client_secret}
    answer = requests.post(sb.url(TOKEN), data=form)
    assert answer.status_code == 200
    token = answer.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == 7200
    assert token["access_token"].count(".") == 2  # JWT-shaped
    assert requests.post(sb.url(TOKEN), data=form).json()["access_token"] != token["access_token"]

    assert_error_envelope(requests.post(sb.url(TOKEN), json=form), 400, TOKEN)
    assert_error_envelope(requests.post(sb.url(TOKEN), data={**form, "grant_type": "password"}), 400, TOKEN)
    wrong = assert_error_envelope(requests.post(sb.url(TOKEN), data={**form, "client_secret": "nope"}), 401, TOKEN)
    assert "credentials" in wrong["message"]
    assert_error_envelope(requests.get(sb.url(TOKEN)), 404, TOKEN)  # unsupported method: 404
    assert sb.stats["tokens_issued"] == 2


def test_data_endpoints_need_a_valid_bearer_token(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}):
        body = assert_error_envelope(requests.get(sb.url(ACTIVITIES), headers=headers), 401, ACTIVITIES)
        assert body["message"] == "Invalid or expired token"
    s = session(sb)
    assert s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code == 200
    assert_error_envelope(s.get(sb.url("/v0/public/nothing")), 404, "/v0/public/nothing")
    assert_error_envelope(s.post(sb.url(ACTIVITIES)), 404, ACTIVITIES)
    assert_error_envelope(s.get(sb.url("/pull/v1/export/activities/jobs")), 404, "/pull/v1/export/activities/jobs")


def test_revoked_expired_and_used_up_tokens_answer_401(peopleai_sandbox_factory) -> None:
    sb = peopleai_sandbox_factory(token_ttl=0.3)
    s = session(sb)
    assert s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code == 200
    assert sb.revoke_tokens() == 1
    assert_error_envelope(s.get(sb.url(ACTIVITIES)), 401, ACTIVITIES)

    s = session(sb)
    sb.faults.expire_tokens_after(2)
    assert [s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code for _ in range(3)] == [200, 200, 401]
    sb.faults.reset("expire_tokens_after")

    s = session(sb)
    assert s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code == 200
    time.sleep(0.35)
    assert s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code == 401
    assert sorted(sb.token_uses().values()) == [1, 1, 2]


# ----- data -------------------------------------------------------------------------------------------


def test_pagination_serves_everything_once_in_order_with_totals(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    s = session(sb)
    served = fetch_all(s, sb, ACTIVITIES, limit=700)
    expected = sb.expected_activities(day(0), day(7))
    assert served == expected
    assert len(served) == 3000 == sb.activity_count()
    assert len({r["uid"] for r in served}) == 3000
    assert [(r["timestamp"], r["uid"]) for r in served] == sorted((r["timestamp"], r["uid"]) for r in served)
    assert all(list(r) == ACTIVITY_FIELDS for r in served)
    assert all(day(0).timestamp() * 1000 <= r["timestamp"] < day(7).timestamp() * 1000 for r in served)
    last = s.get(sb.url(ACTIVITIES), params={"offset": 2999, "limit": 1000}).json()
    assert len(last["data"]) == 1 and last["meta"]["total"] == 3000
    assert s.get(sb.url(ACTIVITIES), params={"offset": 5000}).json()["data"] == []
    # default limit is 1000, unknown parameters are ignored, bad parameters are 400
    assert len(s.get(sb.url(ACTIVITIES), params={"last-n-days": 1, "time-zone": "x"}).json()["data"]) == 1000
    for bad in (
        {"limit": 0}, {"limit": 100_001}, {"offset": -1}, {"limit": "x"}, {"from": "2026-11-1"}, {"ingested-to": "11/02/2026"}
    ):  # fmt: skip
        assert_error_envelope(s.get(sb.url(ACTIVITIES), params=bad), 400, ACTIVITIES)


def test_records_are_realistic(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    activities = sb.expected_activities(day(0), day(7))
    participants = sb.expected_participants(day(0), day(7))
    by_type = {t: [a for a in activities if a["activity_type"] == t] for t in ("email", "call", "meeting")}
    assert all(by_type.values())
    for kind, records in by_type.items():
        for record in records:
            assert (record["meeting_start_time"] is not None) == (kind == "meeting")
            assert record["in_reply_to_source_id"] is None or kind == "email"
            assert record["outbound_phone_number"] is None or kind == "call"
            assert record["duration"] is None or isinstance(record["duration"], float)
            assert 1 <= record["number_of_participants"] <= 8
            assert MIN_LAG_MS <= record["created_at"] - record["timestamp"] <= 2 * 86_400_000
    assert any(a["opportunity_ids"] and len(a["opportunity_ids"]) > 1 for a in activities)
    assert any(a["crm_id"] is None for a in activities) and any(a["crm_id"] for a in activities)
    assert sum(a["number_of_participants"] for a in activities) == len(participants) == sb.participant_count()
    assert all(list(p) == PARTICIPANT_FIELDS for p in participants)
    assert any(p["id"] is None and p["email"] for p in participants)
    assert all(p["user_id"] is None for p in participants if p["external"])
    assert all(sum(p["is_originator"] for p in participants if p["activity_uid"] == a["uid"]) == 1 for a in activities[:50])
    keys = [(p["activity_timestamp"], p["activity_uid"]) for p in participants]
    assert keys == sorted(keys)
    # unicode in names and (occasionally) CRM ids
    assert any(any(ord(ch) > 127 for ch in p["name"] or "") for p in participants)
    assert any(a["crm_id"] and any(ord(ch) > 127 for ch in a["crm_id"]) for a in activities)


MIN_LAG_MS = 60_000


def test_typed_endpoints_partition_the_activities(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    s = session(sb)
    uids: set[str] = set()
    for kind in ("email", "call", "meeting"):
        served = fetch_all(s, sb, f"{ACTIVITIES}/{kind}", limit=333, **{"from": "2026-11-03", "to": "2026-11-04"})
        assert served == sb.expected_activities(day(2), day(4), kind)
        assert served and {r["activity_type"] for r in served} == {kind}
        uids |= {r["uid"] for r in served}
    assert uids == {r["uid"] for r in sb.expected_activities(day(2), day(4))}


def test_date_filters_are_inclusive_days(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    s = session(sb)
    served = fetch_all(s, sb, ACTIVITIES, **{"from": "2026-11-02", "to": "2026-11-02"})
    assert served == sb.expected_activities(day(1), day(2))
    served = fetch_all(s, sb, ACTIVITIES, limit=400, **{"from": "2026-11-05"})
    assert served == sb.expected_activities(day(4), day(30))
    participants = fetch_all(s, sb, PARTICIPANTS, limit=450, **{"from": "2026-11-02", "to": "2026-11-03"})
    assert participants == sb.expected_participants(day(1), day(3))
    assert fetch_all(s, sb, ACTIVITIES, **{"from": "2026-11-04", "to": "2026-11-03"}) == []
    assert fetch_all(s, sb, ACTIVITIES, **{"from": "2027-01-01"}) == []


def test_ground_truth_matches_client_side_filtering_of_everything(peopleai_sandbox_factory) -> None:
    sb = peopleai_sandbox_factory(activities=800, days=3, seed=11)
    s = session(sb)
    everything = fetch_all(s, sb, ACTIVITIES)
    people = fetch_all(s, sb, PARTICIPANTS, limit=999)
    start = day(0).timestamp() * 1000
    for low_h, high_h in ((0, 72), (5, 6), (13.25, 40.5), (71, 80), (-3, 1)):
        low, high = int(start + low_h * 3_600_000), int(start + high_h * 3_600_000)
        assert sb.expected_activities(low, high) == [r for r in everything if low <= r["timestamp"] < high]
        assert sb.expected_activities(low, high, "call") == [
            r for r in everything if low <= r["timestamp"] < high and r["activity_type"] == "call"
        ]
        assert sb.expected_activities(low, high, by="created_at") == [r for r in everything if low <= r["created_at"] < high]
        assert sb.expected_participants(low, high) == [p for p in people if low <= p["activity_timestamp"] < high]


def test_ingestion_filters_bound_created_at(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    s = session(sb)
    served = fetch_all(s, sb, ACTIVITIES, limit=250, **{"ingested-from": "2026-11-03", "ingested-to": "2026-11-03"})
    assert served == sb.expected_activities(day(2), day(3), by="created_at")
    assert any(r["timestamp"] < day(2).timestamp() * 1000 for r in served)  # late ingestion of earlier activity
    typed = fetch_all(
        s, sb, f"{ACTIVITIES}/meeting", **{"from": "2026-11-02", "to": "2026-11-04", "ingested-from": "2026-11-03"}
    )
    assert typed == [r for r in sb.expected_activities(day(1), day(4), "meeting") if r["created_at"] >= day(2).timestamp() * 1000]
    participants = fetch_all(s, sb, PARTICIPANTS, **{"ingested-to": "2026-11-02"})
    assert {p["activity_uid"] for p in participants} == {r["uid"] for r in sb.expected_activities(0, day(2), by="created_at")}


@pytest.mark.parametrize("fmt", ["iso", "mixed"])
def test_timestamp_formats(peopleai_sandbox_factory, fmt: str) -> None:
    sb = peopleai_sandbox_factory(activities=300, timestamp_format=fmt)
    s = session(sb)
    served = fetch_all(s, sb, ACTIVITIES)
    expected = sb.expected_activities(day(0), day(7))
    forms = set()
    for got, want in zip(served, expected, strict=True):
        for name in ("timestamp", "created_at", "meeting_start_time", "meeting_end_time"):
            value = got[name]
            if isinstance(value, str):
                forms.add("Z" if value.endswith("Z") else value[-6:])
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                value = round(parsed.timestamp() * 1000)
            elif value is not None:
                forms.add("ms")
            assert value == want[name]
    assert forms == ({"Z"} if fmt == "iso" else {"Z", "+00:00", "ms"})
    if fmt == "iso":
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", served[0]["timestamp"])
    participants = fetch_all(s, sb, PARTICIPANTS)
    assert any(isinstance(p["activity_timestamp"], str) for p in participants)


def test_same_seed_same_bytes_other_seed_other_bytes(peopleai_sandbox_factory) -> None:
    one = peopleai_sandbox_factory(seed=5, timestamp_format="mixed")
    two = peopleai_sandbox_factory(seed=5, timestamp_format="mixed")
    other = peopleai_sandbox_factory(seed=6, timestamp_format="mixed")
    bodies = []
    for sb in (one, two, other):
        s = session(sb)
        bodies.append(
            [
                s.get(sb.url(path), params={"offset": 100, "limit": 300, "from": "2026-11-02"}).content
                for path in (ACTIVITIES, f"{ACTIVITIES}/call", PARTICIPANTS)
            ]
        )
    assert bodies[0] == bodies[1]
    assert all(a != b for a, b in zip(bodies[0], bodies[2], strict=False))
    assert json.loads(bodies[0][0])["data"][0]["uid"] != json.loads(bodies[2][0])["data"][0]["uid"]


def test_two_million_activities_serve_a_middle_page_quickly(peopleai_sandbox_factory) -> None:
    started = time.monotonic()
    sb = peopleai_sandbox_factory(activities=2_000_000, days=30)
    s = session(sb)
    page = s.get(sb.url(ACTIVITIES), params={"offset": 1_234_567, "limit": 1000}).json()
    assert page["meta"]["total"] == 2_000_000 and len(page["data"]) == 1000
    typed = s.get(sb.url(f"{ACTIVITIES}/call"), params={"offset": 20_000, "limit": 500, "from": "2026-11-12", "to": "2026-11-20"})
    assert {r["activity_type"] for r in typed.json()["data"]} == {"call"}
    people = s.get(sb.url(PARTICIPANTS), params={"offset": 5_000_000, "limit": 1000}).json()
    assert len(people["data"]) == 1000 and people["meta"]["total"] == sb.participant_count()
    assert time.monotonic() - started < 5
    middle = sb.expected_activities(page["data"][10]["timestamp"], page["data"][20]["timestamp"])
    assert middle == page["data"][10:20]


# ----- live inserts -------------------------------------------------------------------------------------


def test_added_activities_are_served_and_in_ground_truth(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    s = session(sb)
    when = datetime(2026, 11, 3, 12, tzinfo=UTC)
    added = sb.add_activities(3, timestamp=when, activity_type="call")
    late = sb.add_activities(1, timestamp=day(1), created_at=day(6))[0]
    assert len({a["uid"] for a in added}) == 3 and all(a["activity_type"] == "call" for a in added)
    served = fetch_all(s, sb, ACTIVITIES, **{"from": "2026-11-03", "to": "2026-11-03"})
    assert served == sb.expected_activities(day(2), day(3))
    assert {a["uid"] for a in added} <= {r["uid"] for r in served}
    assert fetch_all(s, sb, f"{ACTIVITIES}/call") == sb.expected_activities(day(0), day(7), "call")
    ingested = fetch_all(s, sb, ACTIVITIES, **{"ingested-from": "2026-11-07"})
    assert late["uid"] in {r["uid"] for r in ingested}
    people = fetch_all(s, sb, PARTICIPANTS)
    assert people == sb.expected_participants(day(0), day(7))
    assert len(people) == sb.participant_count() == sum(r["number_of_participants"] for r in fetch_all(s, sb, ACTIVITIES))
    assert sb.stats["inserted"] == 4


def test_insert_while_paging_shifts_later_pages(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    s = session(sb)
    params = {"from": "2026-11-02", "to": "2026-11-03", "limit": 100}
    before = sb.expected_activities(day(1), day(3))
    sb.faults.insert_before_offset(200, count=3, path=ACTIVITIES)
    first = s.get(sb.url(ACTIVITIES), params={**params, "offset": 100}).json()
    assert first["data"] == before[100:200]
    shifted = s.get(sb.url(ACTIVITIES), params={**params, "offset": 200}).json()
    assert shifted["meta"]["total"] == len(before) + 3
    assert shifted["data"] == before[197:297]  # three records at the front pushed everything down
    assert sb.expected_activities(day(1), day(3))[3:] == before


# ----- faults ----------------------------------------------------------------------------------------


def test_shape_faults_bare_list_page_cap_overlap_ignore_filters(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    s = session(sb)
    everything = sb.expected_activities(day(0), day(7))
    sb.faults.bare_list()
    bare = s.get(sb.url(ACTIVITIES), params={"limit": 5}).json()
    assert bare == everything[:5]
    sb.faults.bare_list(False)
    sb.faults.cap_page_size(100)
    capped = s.get(sb.url(ACTIVITIES), params={"limit": 500, "offset": 50}).json()
    assert capped["meta"]["limit"] == 500 and capped["data"] == everything[50:150]
    sb.faults.overlap_pages()
    overlapped = s.get(sb.url(ACTIVITIES), params={"limit": 10, "offset": 10}).json()
    assert overlapped["data"] == everything[9:19]
    assert s.get(sb.url(ACTIVITIES), params={"limit": 10}).json()["data"] == everything[:10]
    sb.faults.ignore_filters()
    unfiltered = s.get(sb.url(ACTIVITIES), params={"from": "2026-11-05", "to": "2026-11-05", "limit": 10}).json()
    assert unfiltered["meta"]["total"] == 3000
    sb.faults.reset()
    assert s.get(sb.url(ACTIVITIES), params={"limit": 500}).json()["data"] == everything[:500]


def test_invalid_json_and_dropped_connection(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    s = session(sb)
    sb.faults.invalid_json(1)
    broken = s.get(sb.url(ACTIVITIES), params={"limit": 50})
    assert broken.status_code == 200
    with pytest.raises(ValueError):
        json.loads(broken.content)
    sb.faults.drop_connection(1, path=PARTICIPANTS)
    assert s.get(sb.url(ACTIVITIES), params={"limit": 50}).status_code == 200  # other path: untouched
    with pytest.raises(requests.exceptions.RequestException):
        s.get(sb.url(PARTICIPANTS), params={"limit": 500})
    assert len(s.get(sb.url(PARTICIPANTS), params={"limit": 500}).json()["data"]) == 500
    assert sb.stats["drop_connection"] == 1 and sb.stats["invalid_json"] == 1


def test_fail_next_storm_and_token_outage(peopleai_sandbox: Sandbox) -> None:
    sb = peopleai_sandbox
    s = session(sb)
    sb.faults.fail_next(2, status=500)
    sb.faults.fail_next(1, status=429, retry_after=2)
    statuses = [s.get(sb.url(ACTIVITIES), params={"limit": 1}) for _ in range(4)]
    assert [a.status_code for a in statuses] == [500, 500, 429, 200]
    assert statuses[2].headers["Retry-After"] == "2" and "Retry-After" not in statuses[0].headers
    assert_error_envelope(statuses[0], 500, ACTIVITIES)

    sb.faults.fail_next(1, status=502, path=f"{ACTIVITIES}/email")
    assert s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code == 200
    assert s.get(sb.url(f"{ACTIVITIES}/email"), params={"limit": 1}).status_code == 502

    form = {"grant_type": "client_credentials", "client_id": sb.client_id, "client_secret": sb.client_secret}
    sb.faults.fail_next(1, status=504)
    assert requests.post(sb.url(TOKEN), data=form).status_code == 200  # token requests spared by default
    assert s.get(sb.url(ACTIVITIES)).status_code == 504
    sb.faults.fail_next(1, status=504, include_token=True)
    assert requests.post(sb.url(TOKEN), data=form).status_code == 504
    sb.faults.token_endpoint_down(2)
    assert [requests.post(sb.url(TOKEN), data=form).status_code for _ in range(3)] == [503, 503, 200]

    sb.faults.fail_ratio(0.5, status=429, count=10)
    storm = [s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code for _ in range(60)]
    assert storm.count(429) == 10 and storm[-10:] == [200] * 10
    sb.faults.fail_ratio(1.0, status=503, duration=0.2)
    assert s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code == 503
    time.sleep(0.25)
    assert s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code == 200


def test_rate_limit_answers_429_without_retry_after(peopleai_sandbox_factory) -> None:
    sb = peopleai_sandbox_factory(rate_limit=5.0)
    s = session(sb)  # the token request counts too
    answers = [s.get(sb.url(ACTIVITIES), params={"limit": 1}) for _ in range(9)]
    assert [a.status_code for a in answers] == [200] * 4 + [429] * 5
    assert all("Retry-After" not in a.headers for a in answers)
    assert_error_envelope(answers[-1], 429, ACTIVITIES)
    assert sb.stats["429"] == 5 == sb.stats["rate_limit"]
    time.sleep(1.05)
    assert s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code == 200
    accepted = [r.time for r in sb.requests if r.status != 429]
    assert all(b - a >= 1.0 for a, b in zip(accepted, accepted[5:], strict=False))  # never more than 5 in a second


def test_concurrency_limit_and_latency(peopleai_sandbox_factory) -> None:
    sb = peopleai_sandbox_factory(rate_limit=100.0, max_concurrency=2, latency=0.3)
    token = sb.issue_token()
    statuses: list[int] = []

    def call() -> None:
        answer = requests.get(sb.url(ACTIVITIES), params={"limit": 1}, headers={"Authorization": f"Bearer {token}"})
        statuses.append(answer.status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started >= 0.3
    assert sorted(statuses) == [200, 200, 429, 429, 429]
    assert sb.stats["concurrency"] == 3


def test_request_log_and_stop(peopleai_sandbox_factory) -> None:
    sb = peopleai_sandbox_factory()
    s = session(sb)
    s.get(sb.url(ACTIVITIES), params={"from": "2026-11-02", "limit": 3})
    log = sb.requests
    assert [(r.method, r.path, r.status) for r in log] == [("POST", TOKEN, 200), ("GET", ACTIVITIES, 200)]
    assert log[1].query == {"from": "2026-11-02", "limit": "3"} and log[0].time <= log[1].time
    sb.reset_log()
    assert sb.requests == [] and sb.stats == {}
    for n in range(1, 30):  # logged before the answer is written: no race with the client
        if n % 2:
            sb.faults.fail_next(1, 503)
        status = s.get(sb.url(ACTIVITIES), params={"limit": 1}).status_code
        assert len(sb.requests) == n and sb.requests[-1].status == status
    url = sb.url(ACTIVITIES)
    sb.stop()
    assert not sb.running
    with pytest.raises(requests.exceptions.ConnectionError):
        s.get(url, timeout=2)  # the kept-alive connection was closed too
    assert sb.errors == []


# ----- entry points ---------------------------------------------------------------------------------


def test_cli_prints_connection_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "airflow_provider_activities.testing.sandbox", "--port", "0", "--seed", "3",
               "--activities", "500", "--start", "2026-11-01", "--days", "2", "--no-rate-limit",
               "--timestamp-format", "iso"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = dict(process.stdout.readline().rstrip("\n").split("=", 1) for _ in range(4))
        base_url = lines["PEOPLEAI_SANDBOX_URL"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        connection = json.loads(lines["AIRFLOW_CONN_PEOPLEAI_DEFAULT"])
        assert connection == {
            "conn_type": "peopleai",
            "host": base_url,
            "login": lines["PEOPLEAI_CLIENT_ID"],
            "password": lines["PEOPLEAI_CLIENT_SECRET"],
            "extra": {},
        }
        form = {"grant_type": "client_credentials", "client_id": connection["login"], "client_secret": connection["password"]}
        token = requests.post(base_url + TOKEN, data=form, timeout=5).json()["access_token"]
        page = requests.get(base_url + ACTIVITIES, headers={"Authorization": f"Bearer {token}"}, timeout=5).json()
        assert page["meta"]["total"] == 500 and page["data"][0]["timestamp"].endswith("Z")
        with Sandbox(seed=3, activities=500, days=2) as twin:
            assert page["data"][0]["uid"] == twin.expected_activities(day(0), day(2))[0]["uid"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_connection_json_and_plugin_fixtures(peopleai_connection: Sandbox) -> None:
    sb = peopleai_connection
    assert sb.rate_limit is None and sb.running
    assert json.loads(os.environ["AIRFLOW_CONN_PEOPLEAI_DEFAULT"]) == json.loads(sb.connection_json())
    assert json.loads(sb.connection_json(page_size=250))["extra"] == {"page_size": 250}


def test_plugin_as_users_enable_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest('pytest_plugins = ["pytester", "airflow_provider_activities.testing.pytest_plugin"]')
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.peopleai_sandbox(activities=120, seed=9)
        def test_marker(peopleai_sandbox):
            assert peopleai_sandbox.activity_count() == 120 and peopleai_sandbox.seed == 9

        def test_connection(peopleai_connection):
            assert peopleai_connection.base_url in os.environ["AIRFLOW_CONN_PEOPLEAI_DEFAULT"]

        def test_factory(peopleai_sandbox_factory):
            assert peopleai_sandbox_factory(activities=7).activity_count() == 7
        """
    )
    result = pytester.runpytest_inprocess("-W", "error::pytest.PytestUnknownMarkWarning", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize("peopleai_sandbox", [{"activities": 42}], indirect=True)
def test_indirect_parameter_configures_the_fixture(peopleai_sandbox: Sandbox) -> None:
    assert peopleai_sandbox.activity_count() == 42


def test_importing_the_sandbox_does_not_import_pytest() -> None:
    code = (
        "import sys, airflow_provider_activities.testing.sandbox as s; print('pytest' in sys.modules); "
        "print(s.peopleai_sandbox_factory.__module__, 'pytest' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["False", "airflow_provider_activities.testing.pytest_plugin True"]
