"""The sandbox's Raw Activity Data (bulk export) API: jobs, their states and limits, the files.

Records follow the vendor's Raw Activity Data schema and are derived from the same generated
activities (and live inserts) as the Activity API endpoints: the same ``uid``, type, source id,
timestamp, participants and matches. Each activity is ingested once (at its ``created_at``); about
one in eight is reprocessed later (a second version, ``ingest_timestamp`` later, CRM status
pushed, a ``reprocessed`` tag). A snapshot holds the latest version of each activity whose
``timestamp`` is in its days; a delta holds every version whose ``ingest_timestamp`` is in its
days (so both versions when both fall inside). Times are served at whole seconds, as the vendor
documents them (``yyyy-MM-ddTHH:mm:ssZ``).

Jobs move ``Queued`` -> ``Running`` -> ``Completed`` as they are polled (see
:class:`ExportSettings.polls`), at most :attr:`ExportSettings.max_running` running at once and
:attr:`ExportSettings.max_queued` waiting; a job can be made to end ``Failed`` or ``Canceled``.
The data endpoint redirects to a pre-signed file URL on the same server, or on a second
loopback "file host" (``127.0.0.2``), which refuses a request that carries a bearer token as well
(like S3 refuses two authentication mechanisms).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import hmac
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, BinaryIO
from urllib.parse import quote

from airflow_provider_activities.testing._data import DAY_MS, EXTRA_INDEX_BASE, Generator, mix64, to_ms
from airflow_provider_activities.testing._export_files import Build, ExportFile, ExportFiles, FileSpec
from airflow_provider_activities.testing._pools import crm_id
from airflow_provider_activities.testing._server import ErrorMaker, FileBody, Request, Response
from airflow_provider_activities.testing._store import Extra, Filter, Store

UTC = timezone.utc
EXPORT_JOBS_PATH = "/pull/v1/export/activities/jobs"
EXPORT_FILES_PATH = "/pull/v1/export/files"
EXPORT_TYPES = ("snapshot", "delta")
EXPORT_ACTIVITY_TYPES = ("all", "email", "meeting", "call")
JOB_STATES = ("Queued", "Running", "Completed", "Canceled", "Failed")
MAX_DAYS = {"snapshot": 365, "delta": 14}
REPROCESS_PERCENT = 12
MIN_REPROCESS_LAG_MS = 10 * 60_000
MAX_REPROCESS_LAG_MS = 3 * DAY_MS
TIMESTAMP_FIELDS = ("timestamp", "ingest_timestamp", "start_time", "end_time", "created")
EXPORT_TIMESTAMP_FORMATS = ("iso", "mixed", "epoch_ms")
_DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_JOB_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_FILE_RE = re.compile(r"^/([0-9a-f-]{36})\.jsonl(\.gz)?$")
_SIGNED_EXPIRES = "4102444800"  # 2100-01-01: far off; no wall clock in the data

_TEAMS = (
    ("00E5e000001AmerS", "Americas Sales", "00E5e000001SalesG"),
    ("00E5e000001EmeaS", "EMEA Sales", "00E5e000001SalesG"),
    ("00E5e000001ApacS", "APAC Sales", "00E5e000001SalesG"),
    ("", "Customer Success", ""),
    ("00E5e000001SalesG", "Global Sales", ""),
    ("", "Solutions Engineering", ""),
)
_TAGS = ("renewal", "expansion", "executive", "pricing", "security-review", "churn-risk", "négociation")
_CAMPAIGNS = (
    ("7015e000000Q4Web", "Q4 Webinar Series", "2026-10-01", "2026-12-31"),
    ("7015e000000Summit", "Customer Summit 2026", "2026-09-15", "2026-11-15"),
    ("7015e000000Renew", "Renewal Push", "2026-01-01", None),
    ("7015e000000Münch", "München Roadshow", "2026-11-02", "2026-11-06"),
    ("7015e000000Field", "Field Marketing Q1", "2027-01-01", "2027-03-31"),
)
_SUBJECTS = ("Follow-up", "Proposal", "Pricing question", "Next steps", "Re: contract", "Intro", "Résumé of our call")
_TOPICS = ("renewal", "security review", "Q4 plan", "onboarding", "pilot", "roadmap", "Angebot")
_LOCATIONS = ("Zoom", "Google Meet", "Microsoft Teams", "Room Ångström", "Customer office", None)
_FILES = ("Proposal.pdf", "Pricing Q4.xlsx", "Müller-Angebot.docx", "deck.pptx", "NDA.pdf", "screenshot.png")


def _sec(ms: int) -> int:
    """Epoch ms cut to whole seconds (the export's precision)."""
    return ms - ms % 1000


def _iso(ms: int, suffix: str = "Z") -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + suffix


def _day_ms(day: date) -> int:
    return to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))


def to_day(value: Any) -> date:
    """A day from a ``date`` (or ``datetime``) or a ``YYYY-MM-DD`` string.

    :param value: the day.
    """
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DAY_RE.match(value):
        return date.fromisoformat(value)
    raise ValueError(f"expected a date or 'YYYY-MM-DD', got {value!r}")


@dataclass
class ExportSettings:
    """The knobs of the export API (settable at any time, e.g. ``sandbox.export.settings.polls = 0``).

    :param polls: status polls a job answers before it ends: the first half ``Queued``, the rest
        ``Running``; the next poll ends it (``Completed``, or the state :meth:`ExportService.fail_next`
        chose). ``0`` ends it at the first poll.
    :param max_running: jobs running at once; a queued job stays ``Queued`` (its polls not counted)
        while that many run.
    :param max_queued: jobs waiting; creating one more answers ``limit_status`` "too many export jobs".
    :param limit_status: the status of the "too many export jobs" answer (429, or e.g. 400).
    :param redirect: ``"same_host"`` (302 to a file path of this server), ``"other_host"`` (302 to
        the file host on another loopback address) or ``None`` (the data in the answer itself).
    :param redirect_url: when set, the data endpoint redirects there instead (to test refusals).
    :param gzip: serve the JSON Lines gzip-compressed (a ``.jsonl.gz`` file).
    :param content_encoding: with ``gzip``, label the body ``Content-Encoding: gzip`` (the HTTP
        client undoes it) instead of serving a ``.gz`` file as ``application/gzip``.
    :param timestamp_format: ``"iso"`` (``2026-11-01T03:04:05Z``), ``"mixed"`` (by record: ``Z``,
        ``+00:00`` or epoch ms) or ``"epoch_ms"``.
    :param stale_duplicates: also write the earlier version of each reprocessed activity, after
        the latest one (a client must keep the latest ``ingest_timestamp``, not the last line).
    :param spill_days: also write records of this many days before and after the job's days
        (a client must bound records to the days it asked for).
    :param unknown_fields: records matched to an account carry an ``account`` object, which the
        schema does not list (a client keeps it in ``_extra``).
    :param build_wait: seconds the poll that completes a job waits for the job's file to be
        built (in the background, from that poll on); a job whose file is not built by then
        answers ``Running``, as a real job does while its file is produced, and a later poll
        completes it.
    """

    polls: int = 2
    max_running: int = 2
    max_queued: int = 10
    limit_status: int = 429
    redirect: str | None = "same_host"
    redirect_url: str | None = None
    gzip: bool = True
    content_encoding: bool = False
    timestamp_format: str = "iso"
    stale_duplicates: bool = False
    spill_days: int = 0
    unknown_fields: bool = True
    build_wait: float = 5.0


@dataclass
class ExportJobRecord:
    """One job as the sandbox holds it (see :attr:`ExportService.jobs`).

    :param job_id: its id (UUID-shaped, deterministic from the seed and its number).
    :param export_type: ``snapshot`` or ``delta``.
    :param activity_type: ``all``, ``email``, ``meeting`` or ``call``.
    :param start_date: its first day.
    :param end_date: its last day (inclusive).
    :param number: its creation number (1 for the first job).
    :param state: ``Queued``, ``Running``, ``Completed``, ``Canceled`` or ``Failed``.
    :param polls: the status polls counted so far.
    :param outcome: the state it ends in (``Completed`` unless :meth:`ExportService.fail_next` chose).
    :param created_time: ``job_created_time`` as answered.
    :param start_time: ``job_start_time`` as answered.
    :param end_time: ``job_end_time`` as answered.
    :param expired: forgotten (its status answers 404).
    :param build: its file, from the poll that completed it.
    :param downloads: data requests answered.
    """

    job_id: str
    export_type: str
    activity_type: str
    start_date: date
    end_date: date
    number: int
    state: str = "Queued"
    polls: int = 0
    outcome: str = "Completed"
    created_time: str = ""
    start_time: str | None = None
    end_time: str | None = None
    expired: bool = False
    build: Build | None = field(default=None, repr=False)
    downloads: int = 0

    @property
    def gzipped(self) -> bool:
        """Whether the job's file is gzip (fixed when the file is written, like its other knobs)."""
        return self.build.spec.gzip if self.build is not None else True

    @property
    def data(self) -> bytes | None:
        """The bytes of the job's file, once built (read from disk: for inspection in tests)."""
        file = self.build.wait(0) if self.build is not None and self.build.done else None
        return file.read() if file is not None else None

    def answer(self) -> dict[str, Any]:
        """The job as the API describes it."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "export_type": self.export_type,
            "output_format": "JSONLines",
            "activity_type": self.activity_type,
            "start_date": self.start_date.isoformat(),
            "end_date": self.end_date.isoformat(),
            "job_created_time": self.created_time,
            "job_start_time": self.start_time,
            "job_end_time": self.end_time,
        }


@dataclass(frozen=True)
class FileRequest:
    """A request to a pre-signed file URL: which host, and whether a bearer token came along.

    :param host: the address of the host that answered (``127.0.0.1`` or the file host's).
    :param path: the request path.
    :param authorization: an ``Authorization`` header came along.
    :param status: the status answered.
    """

    host: str
    path: str
    authorization: bool
    status: int


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RawRecords:
    """Raw Activity Data records of one generator (and store of live inserts), deterministic.

    :param gen: the generated data.
    :param store: the data with live inserts.
    """

    def __init__(self, gen: Generator, store: Store) -> None:
        self.gen = gen
        self.store = store
        base = mix64(int.from_bytes(hashlib.sha256(f"peopleai-export:{gen.seed}".encode()).digest()[:8], "big"))
        self._reprocess_key = mix64(base ^ 0x2E9C)
        self._seed_text = f"raw:{gen.seed}"
        self._crm_ids: dict[tuple[str, int], str] = {}
        self._leads = {lead.id: lead.person.id for lead in gen.pools.leads}

    # -- versions -------------------------------------------------------------------------------

    def reprocess_lag_ms(self, index: int) -> int | None:
        """The lag of the second version of activity ``index`` after its ingestion, or ``None``.

        :param index: the activity's record number (its index, or ``EXTRA_INDEX_BASE`` plus an insert's number).
        """
        h = mix64(self._reprocess_key ^ index)
        if h % 100 >= REPROCESS_PERCENT:
            return None
        return MIN_REPROCESS_LAG_MS + (h >> 8) % (MAX_REPROCESS_LAG_MS - MIN_REPROCESS_LAG_MS)

    def versions(self, index: int, activity: dict[str, Any]) -> list[int]:
        """The ``ingest_timestamp`` (epoch ms, whole seconds) of each version, oldest first.

        :param index: the activity's record number.
        :param activity: the activity record.
        """
        first = _sec(activity["created_at"])
        lag = self.reprocess_lag_ms(index)
        return [first] if lag is None else [first, _sec(activity["created_at"] + lag)]

    # -- records --------------------------------------------------------------------------------

    def _crm_id(self, prefix: str, number: int) -> str:
        key = (prefix, number)
        found = self._crm_ids.get(key)
        if found is None:
            found = self._crm_ids[key] = crm_id(random.Random(f"{self._seed_text}:{prefix}:{number}"), prefix)
        return found

    def build(
        self,
        index: int,
        activity: dict[str, Any],
        participants: list[dict[str, Any]],
        version: int,
        unknown_fields: bool,
    ) -> dict[str, Any]:
        """The record of version ``version`` of one activity; times as epoch ms (whole seconds).

        :param index: the activity's record number (it seeds the record's choices).
        :param activity: the activity record.
        :param participants: its participants, as the Activity API serves them.
        :param version: 0 for the first ingestion, 1 for the reprocessed one.
        :param unknown_fields: add the ``account`` object the schema does not list.
        """
        rng = random.Random(f"{self._seed_text}:{index}")
        rand = rng.random
        kind = activity["activity_type"]
        ingests = self.versions(index, activity)
        ingest = ingests[min(version, len(ingests) - 1)]
        ts = _sec(activity["timestamp"])
        people = [self._participant(p, activity, rng) for p in participants]
        external = any(p["type"] == "external" for p in people)
        record: dict[str, Any] = {"uid": activity["uid"], "source_id": activity["activity_source_id"], "type": kind}
        if kind == "email":
            record["subject"] = f"{_SUBJECTS[int(rand() * len(_SUBJECTS))]} - {_TOPICS[int(rand() * len(_TOPICS))]}"
        elif kind == "meeting":
            record["summary"] = f"{_TOPICS[int(rand() * len(_TOPICS))].capitalize()} sync"
        record["direction"] = activity["direction"] if external else "internal"
        record["timestamp"] = ts
        record["ingest_timestamp"] = ingest
        tags = sorted({_TAGS[int(rand() * len(_TAGS))] for _ in range(int(rand() * 4))})
        if version:
            tags.append("reprocessed")
        record["tags"] = tags
        campaigns: list[dict[str, Any]] = []
        for _ in range(int(rand() * 3)):
            crm, name, start, end = _CAMPAIGNS[int(rand() * len(_CAMPAIGNS))]
            if all(c["crm_id"] != crm for c in campaigns):
                campaigns.append({"crm_id": crm, "name": name, "start_date": start, "end_date": end})
        record["campaigns"] = campaigns
        pushed = version > 0 or rand() < 0.5
        record["crm_status"] = {
            "pushed": pushed,
            "push_time": (ingest + 30_000) if pushed else None,
            "crm_id": (activity["crm_id"] or self._crm_id("00T", index % (1 << 40))) if pushed else None,
            "matched_to": activity["matched_to"],
        }
        stats: dict[str, Any] = {
            "total_participants": len(people),
            "internal_participants": sum(p["type"] == "internal" for p in people),
            "external_participants": sum(p["type"] == "external" for p in people),
            "contacts_participants": sum(p.get("matched_as") == "contact" for p in people),
        }
        if kind == "email":  # the Activity API's participant status of an e-mail is its line
            stats["participants_on_to_line"] = sum(p["status"] == "to" for p in participants)
            stats["participants_on_cc_line"] = sum(p["status"] == "cc" for p in participants)
        if kind == "meeting":
            for state in ("accepted", "declined", "tentative"):
                stats[f"{state}_participants"] = sum(p.get("status") == state for p in people)
        record["stats"] = stats
        record["participants"] = people
        if kind == "email":
            if activity["in_reply_to_source_id"] is not None:
                record["in_reply_to_source_id"] = activity["in_reply_to_source_id"]
            record["reply_received"] = rand() < 0.4
            record["attachment_file_names"] = [_FILES[int(rand() * len(_FILES))] for _ in range(int(rand() * 3))]
        elif kind == "meeting":
            record["start_time"] = _sec(activity["meeting_start_time"])
            record["end_time"] = _sec(activity["meeting_end_time"])
            record["duration"] = round(activity["duration"])
            record["all_day"] = rand() < 0.03
            record["location"] = _LOCATIONS[int(rand() * len(_LOCATIONS))]
            record["status"] = activity["meeting_status"]
        else:
            record["duration"] = round(activity["duration"])
            if activity["outbound_phone_number"] is not None:
                record["outbound_phone_number"] = activity["outbound_phone_number"]
        record["created"] = _sec(activity["created_at"])
        if not external:
            record["internal_match_status"] = {
                "pushed": False,
                "push_time": None,
                "crm_id": None,
                "matched_to": "none",
            }
        if unknown_fields and activity["account_id"] is not None:
            account = self.gen._accounts_by_id[activity["account_id"]]
            record["account"] = {
                "crm_id": account.crm_id,
                "name": account.name,
                "parent_account_crm_id": None,
                "parent_account_name": None,
            }
        return record

    def _participant(self, person: dict[str, Any], activity: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        external = bool(person["external"])
        out: dict[str, Any] = {
            "peopleai_id": f"P{person['id']}" if person["id"] is not None else None,
            "crm_id": None,
            "name": person["name"],
            "title": person["job_title"],
            "phone": person["phone_number"],
            "email": person["email"],
            "role": "originator"
            if person["is_originator"]
            else ("optional_participant" if rng.random() < 0.15 else "participant"),
            "type": "external" if external else "internal",
            "time_spent": person["duration"],
        }
        if external:
            lead_person = self._leads.get(activity["lead_id"]) if activity["lead_id"] is not None else None
            if person["id"] is None:
                out["matched_as"] = "none"
            elif person["id"] == lead_person:
                out["matched_as"] = "lead"
                out["crm_id"] = self._crm_id("00Q", person["id"])
            else:
                out["matched_as"] = "contact"
                out["crm_id"] = self._crm_id("003", person["id"])
        else:
            out["crm_id"] = self._crm_id("005", person["id"])
            crm, name, parent = _TEAMS[(person["user_id"] or 0) % len(_TEAMS)]
            out["team"] = {"crm_id": crm, "team_name": name, "parent_team_crm_id": parent}
        if activity["activity_type"] == "meeting":
            status = person["status"]
            out["status"] = {"organizer": "accepted", "needs_action": "pending"}.get(status, status)
        return out


def format_record(record: dict[str, Any], mode: str, number: int) -> dict[str, Any]:
    """A record as served: times (epoch ms) written in ``mode`` (record ``number`` picks the mixed form).

    :param record: a record, times as epoch ms.
    :param mode: ``iso``, ``mixed`` or ``epoch_ms``.
    :param number: the record's number (picks its form in ``mixed``).
    """
    if mode == "epoch_ms":
        suffix: str | None = None
    elif mode == "iso":
        suffix = "Z"
    else:
        suffix = ("Z", "+00:00", None)[number % 3]

    def show(value: int | None) -> Any:
        if value is None or suffix is None:
            return value
        return _iso(value, suffix)

    out = dict(record)
    for name in TIMESTAMP_FIELDS:
        if name in out:
            out[name] = show(out[name])
    for name in ("crm_status", "internal_match_status"):
        if out.get(name) is not None:
            status = dict(out[name])
            status["push_time"] = show(status["push_time"])
            out[name] = status
    return out


class ExportService:
    """The export endpoints of one sandbox, its jobs, and the ground truth of its files.

    Reach it as ``sandbox.export``: :attr:`settings` holds the knobs; :meth:`fail_next`,
    :meth:`refuse_next`, :meth:`set_state` and :meth:`expire` shape jobs; :attr:`jobs`,
    :attr:`file_requests` and :attr:`peak_running` tell what happened; :meth:`stats` tells how
    fast files were built.

    A job's file is built once, when the job completes, and the same file serves every later job
    of the same days, types, knobs and data (see :mod:`._export_files`).

    :param gen: the generated data.
    :param store: the data with live inserts.
    :param secret: signs the file URLs.
    """

    def __init__(self, gen: Generator, store: Store, secret: str) -> None:
        self.settings = ExportSettings()
        """The knobs (see :class:`ExportSettings`)."""
        self.raw = RawRecords(gen, store)
        self.gen = gen
        self.store = store
        self._secret = secret.encode()
        self._lock = threading.RLock()
        self._jobs: dict[str, ExportJobRecord] = {}
        self._counter = 0
        self._fail_next: list[str] = []
        self._refuse_next: list[tuple[int, str | None]] = []
        self._file_requests: list[FileRequest] = []
        self.peak_running = 0
        """The most jobs that were ``Running`` at once."""
        self.peak_active = 0
        """The most jobs that were ``Queued`` or ``Running`` at once."""
        self.base_url = ""
        """The API's base URL (set when the sandbox starts)."""
        self.file_host_url = ""
        """The file host's base URL (set when the sandbox starts)."""
        self._files = ExportFiles(self._write)

    # -- knobs -----------------------------------------------------------------------------------

    def fail_next(self, n: int = 1, state: str = "Failed") -> None:
        """The next ``n`` jobs created end in ``state`` (``Failed`` or ``Canceled``) instead of ``Completed``.

        :param n: how many jobs.
        :param state: ``Failed`` or ``Canceled``.
        """
        if state not in ("Failed", "Canceled"):
            raise ValueError(f"state must be 'Failed' or 'Canceled', got {state!r}")
        with self._lock:
            self._fail_next.extend([state] * n)

    def refuse_next(self, n: int = 1, status: int | None = None, message: str | None = None) -> None:
        """The next ``n`` job creations answer "too many export jobs" (status ``limit_status`` unless given).

        :param n: how many creations.
        :param status: the status answered (default: ``settings.limit_status``).
        :param message: the message answered (default: the usual one).
        """
        with self._lock:
            self._refuse_next.extend([(status or 0, message)] * n)

    def set_state(self, job_id: str, state: str) -> None:
        """Put a job in ``state`` now (e.g. ``Canceled``, as an administrator would); a job put in
        ``Completed`` has its file built before this returns.

        :param job_id: the job.
        :param state: one of ``Queued``, ``Running``, ``Completed``, ``Canceled``, ``Failed``.
        """
        if state not in JOB_STATES:
            raise ValueError(f"state must be one of {JOB_STATES}, got {state!r}")
        with self._lock:
            job = self._jobs[job_id]
            job.state = state
            build = self._request_file(job) if state == "Completed" else None
            if state in ("Completed", "Failed", "Canceled"):
                job.end_time = job.end_time or _now()
        if build is not None:
            build.wait()

    def expire(self, job_id: str) -> None:
        """Forget a job, as after the 10 days of retention (its status answers 404).

        :param job_id: the job.
        """
        with self._lock:
            job = self._jobs[job_id]
            if job.expired:
                return
            job.expired = True
            build = job.build
        if build is not None:
            self._files.release(build)

    def stats(self) -> dict[str, Any]:
        """How the job files were built: ``files_built``, ``records_written``, ``bytes_written``,
        ``build_seconds``, ``reused`` (jobs whose file was already built or under way),
        ``files_on_disk``, ``bytes_on_disk``, and ``last_build`` (``records``, ``bytes``,
        ``seconds``, ``records_per_second``, ``bytes_per_second``; ``None`` before any build).
        Each build also logs one line at INFO with its size and rate.
        """
        return self._files.stats()

    @property
    def jobs(self) -> list[ExportJobRecord]:
        """Every job created, oldest first (copies)."""
        with self._lock:
            return [ExportJobRecord(**{**vars(job)}) for job in sorted(self._jobs.values(), key=lambda j: j.number)]

    @property
    def file_requests(self) -> list[FileRequest]:
        """Every request to a file URL, in order."""
        with self._lock:
            return list(self._file_requests)

    def file_path(self, job_id: str) -> str:
        """The path of a job's file (on either host): ``.jsonl.gz`` when it was written gzip (or,
        before it is written, when ``settings.gzip`` says it will be).

        :param job_id: the job.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            gzipped = job.gzipped if job is not None and job.build is not None else self.settings.gzip
        return f"{EXPORT_FILES_PATH}/{job_id}.jsonl{'.gz' if gzipped else ''}"

    # -- ground truth ------------------------------------------------------------------------------

    def file_records(self, start_date: Any, end_date: Any, export_type: str, activity_type: str = "all") -> list[dict[str, Any]]:
        """The records a job of these days writes to its file, in order, as served (with the
        knobs of now).

        :param start_date: the first day (``date`` or ``YYYY-MM-DD``).
        :param end_date: the last day (inclusive).
        :param export_type: ``snapshot`` or ``delta``.
        :param activity_type: ``all``, ``email``, ``meeting`` or ``call``.
        """
        spec = self._spec(start_date, end_date, export_type, activity_type, self.settings)
        return [format_record(record, spec.timestamp_format, number) for number, record in self._rows(spec)]

    def expected_records(
        self, start_date: Any, end_date: Any, export_type: str, activity_type: str = "all"
    ) -> list[dict[str, Any]]:
        """What a correct client keeps of a job's file (as served): records whose ``timestamp``
        (snapshot) or ``ingest_timestamp`` (delta) falls in the days, each ``uid`` once per UTC day
        of that field, the latest ``ingest_timestamp`` winning; ordered by that field, then ``uid``.

        :param start_date: the first day (``date`` or ``YYYY-MM-DD``).
        :param end_date: the last day (inclusive).
        :param export_type: ``snapshot`` or ``delta``.
        :param activity_type: ``all``, ``email``, ``meeting`` or ``call``.
        """
        spec = self._spec(start_date, end_date, export_type, activity_type, self.settings)
        quiet = dataclasses.replace(spec, stale_duplicates=False, spill_days=0)
        field_name = "timestamp" if export_type == "snapshot" else "ingest_timestamp"
        best: dict[tuple[int, str], tuple[int, dict[str, Any]]] = {}
        for number, record in self._rows(quiet):
            key = (record[field_name] // DAY_MS, record["uid"])
            if key not in best or record["ingest_timestamp"] >= best[key][1]["ingest_timestamp"]:
                best[key] = (number, record)
        ordered = sorted(best.values(), key=lambda item: (item[1][field_name], item[1]["uid"]))
        return [format_record(record, spec.timestamp_format, number) for number, record in ordered]

    def _spec(self, start_date: Any, end_date: Any, export_type: str, activity_type: str, settings: ExportSettings) -> FileSpec:
        """The file of a job of these days with these knobs, over the data of now."""
        if export_type not in EXPORT_TYPES:
            raise ValueError(f"export_type must be one of {EXPORT_TYPES}, got {export_type!r}")
        if activity_type not in EXPORT_ACTIVITY_TYPES:
            raise ValueError(f"activity_type must be one of {EXPORT_ACTIVITY_TYPES}, got {activity_type!r}")
        return FileSpec(
            export_type=export_type,
            activity_type=activity_type,
            start_date=to_day(start_date),
            end_date=to_day(end_date),
            gzip=settings.gzip,
            timestamp_format=settings.timestamp_format,
            stale_duplicates=settings.stale_duplicates,
            spill_days=settings.spill_days,
            unknown_fields=settings.unknown_fields,
            data_version=self.store.version,
        )

    def _rows(self, spec: FileSpec) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(record number, record)`` of a file in order, times as epoch ms, made one at a time;
        the number picks mixed formats.
        """
        kind = None if spec.activity_type == "all" else spec.activity_type
        low = _day_ms(spec.start_date) - spec.spill_days * DAY_MS
        high = _day_ms(spec.end_date) + DAY_MS + spec.spill_days * DAY_MS
        build = self.raw.build
        if spec.export_type == "snapshot":
            view = self.store.view(Filter(kind, ts_from=low, ts_to=high))
            for index, extra in view.items(0):
                activity, people, number = self._activity(index, extra)
                latest = len(self.raw.versions(number, activity)) - 1
                yield 2 * number + latest, build(number, activity, people, latest, spec.unknown_fields)
                if spec.stale_duplicates and latest > 0:
                    yield 2 * number, build(number, activity, people, 0, spec.unknown_fields)
            return
        # A delta is ordered by ingest_timestamp: find the versions first (cheap keys only), then
        # make their records in that order.
        view = self.store.view(Filter(kind, created_from=low - MAX_REPROCESS_LAG_MS, created_to=high))
        found: list[tuple[int, str, int, int, Extra | None]] = []
        for index, extra in view.items(0):
            activity = self.gen.activity(index) if extra is None else extra.activity
            number = index if extra is None else EXTRA_INDEX_BASE + extra.number
            for version, ingest in enumerate(self.raw.versions(number, activity)):
                if low <= ingest < high:
                    found.append((ingest, activity["uid"], version, index, extra))
        found.sort(key=lambda item: item[:3])
        for _ingest, _uid, version, index, extra in found:
            activity, people, number = self._activity(index, extra)
            yield 2 * number + version, build(number, activity, people, version, spec.unknown_fields)

    def _activity(self, index: int, extra: Extra | None) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
        if extra is None:
            activity = self.gen.activity(index)
            return activity, self.gen.make_participants(index, activity), index
        return dict(extra.activity), [dict(p) for p in extra.participants], EXTRA_INDEX_BASE + extra.number

    def _write(self, spec: FileSpec, out: BinaryIO) -> int:
        """Write the file of ``spec`` to ``out`` as JSON Lines (gzip when the spec says so),
        streaming; returns how many records it wrote.
        """
        if not spec.gzip:
            return self._write_lines(spec, out.write)
        with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=out, mtime=0) as packed:
            return self._write_lines(spec, packed.write)

    def _write_lines(self, spec: FileSpec, write: Callable[[bytes], object]) -> int:
        """The records of ``spec`` as JSON Lines, a thousand lines a ``write``; their count."""
        mode = spec.timestamp_format
        count = 0
        lines: list[str] = []
        for number, record in self._rows(spec):
            lines.append(json.dumps(format_record(record, mode, number), ensure_ascii=False, separators=(",", ":")))
            count += 1
            if len(lines) == 1000:
                write(("\n".join(lines) + "\n").encode("utf-8"))
                lines.clear()
        if lines:
            write(("\n".join(lines) + "\n").encode("utf-8"))
        return count

    def _request_file(self, job: ExportJobRecord) -> Build:
        """The job's file: requested once, with the knobs of now (later knob changes do not alter it)."""
        if job.build is None:
            spec = self._spec(job.start_date, job.end_date, job.export_type, job.activity_type, self.settings)
            job.build = self._files.request(spec)
        return job.build

    # -- HTTP ------------------------------------------------------------------------------------

    def create(self, request: Request, error: ErrorMaker) -> Response:
        """``POST /pull/v1/export/activities/jobs``.

        :param request: the request.
        :param error: makes error answers.
        """
        path = request.path
        try:
            body = json.loads(request.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error(400, path, "The request body must be a JSON object")
        export_type = body.get("export_type")
        activity_type = body.get("activity_type", "all")
        output_format = body.get("output_format", "JSONLines")
        if export_type not in EXPORT_TYPES:
            return error(400, path, f"export_type must be one of {', '.join(EXPORT_TYPES)}")
        if activity_type not in EXPORT_ACTIVITY_TYPES:
            return error(400, path, f"activity_type must be one of {', '.join(EXPORT_ACTIVITY_TYPES)}")
        if output_format != "JSONLines":
            return error(400, path, "output_format must be JSONLines (CSV is not supported for activities)")
        days = []
        for name in ("start_date", "end_date"):
            text = body.get(name)
            try:
                if not isinstance(text, str) or not _DAY_RE.match(text):
                    raise ValueError
                days.append(date.fromisoformat(text))
            except ValueError:
                return error(400, path, f"{name} must be a date as yyyy-MM-dd, got {text!r}")
        first, last = days
        if last < first:
            return error(400, path, "end_date must not be before start_date")
        span = (last - first).days + 1
        if span > MAX_DAYS[export_type]:
            return error(
                400,
                path,
                f"Date range of {span} days exceeds the maximum of {MAX_DAYS[export_type]} days for {export_type} exports",
            )
        settings = self.settings
        with self._lock:
            refused = self._refuse_next.pop(0) if self._refuse_next else None
            queued = sum(1 for job in self._jobs.values() if job.state == "Queued" and not job.expired)
            if refused is None and queued >= settings.max_queued:
                refused = (0, None)
            if refused is not None:
                status = refused[0] or settings.limit_status
                message = refused[1] or (
                    f"Too many export jobs: at most {settings.max_running} running and {settings.max_queued} queued"
                )
                return error(status, path, message, fault="export_limit")
            self._counter += 1
            number = self._counter
            digest = hashlib.sha256(f"export-job:{self.gen.seed}:{number}".encode()).hexdigest()
            job_id = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
            job = ExportJobRecord(
                job_id=job_id,
                export_type=export_type,
                activity_type=activity_type,
                start_date=first,
                end_date=last,
                number=number,
                outcome=self._fail_next.pop(0) if self._fail_next else "Completed",
                created_time=_now(),
            )
            self._jobs[job_id] = job
            self._note_peaks()
            answer = job.answer()
        return Response(200, json.dumps(answer).encode())

    def _note_peaks(self) -> None:
        live = [job for job in self._jobs.values() if not job.expired]
        self.peak_running = max(self.peak_running, sum(job.state == "Running" for job in live))
        self.peak_active = max(self.peak_active, sum(job.state in ("Queued", "Running") for job in live))

    def _job(self, job_id: str, path: str, error: ErrorMaker) -> ExportJobRecord | Any:
        if not _JOB_ID_RE.match(job_id):
            return error(400, path, f"Malformed job id {job_id!r}")
        job = self._jobs.get(job_id)
        if job is None or job.expired:
            return error(404, path, f"Export job {job_id} not found")
        return job

    def status_or_data(self, request: Request, error: ErrorMaker) -> Response:
        """``GET /pull/v1/export/activities/jobs/{job_id}`` and ``.../{job_id}/data``.

        :param request: the request.
        :param error: makes error answers.
        """
        path = request.path
        rest = path[len(EXPORT_JOBS_PATH) + 1 :]
        job_id, _, tail = rest.partition("/")
        if tail not in ("", "data"):
            return error(404, path, f"No handler for GET {path}")
        with self._lock:
            job = self._job(job_id, path, error)
            if not isinstance(job, ExportJobRecord):
                return job
            if tail == "":
                build = self._poll(job)
                if build is None:
                    return Response(200, json.dumps(job.answer()).encode())
            elif job.state != "Completed":
                return error(400, path, f"Export job {job_id} is {job.state}, not Completed: no data")
            else:
                job.downloads += 1
                build = self._request_file(job)
        if tail == "":
            return self._finish_poll(job, build)
        return self._data(job_id, build)

    def _data(self, job_id: str, build: Build) -> Response:
        """The data answer of a completed job: a redirect to its signed file URL, or the file."""
        file = build.wait()  # built before the job completed, unless set_state completed it just now
        if file is None:
            raise RuntimeError(f"export job {job_id} has no file")  # wait() without a timeout returns a file
        settings = self.settings
        if settings.redirect_url is not None:
            return Response(302, b"", headers={"Location": settings.redirect_url})
        if settings.redirect == "same_host":
            return Response(302, b"", headers={"Location": self._signed(job_id)})
        if settings.redirect == "other_host":
            return Response(302, b"", headers={"Location": self.file_host_url + self._signed(job_id)})
        return self._file_response(job_id, file)

    def _poll(self, job: ExportJobRecord) -> Build | None:
        """Count one status poll of ``job`` (under the lock). When the poll completes the job, the
        job's file is requested and returned, for :meth:`_finish_poll` to wait for; else ``None``.
        """
        if job.state in ("Completed", "Failed", "Canceled"):
            return None
        settings = self.settings
        running = sum(1 for other in self._jobs.values() if other.state == "Running" and not other.expired)
        if job.state == "Queued" and running >= settings.max_running:
            return None  # waits for a running slot; this poll does not count
        job.polls += 1
        if job.polls > settings.polls:
            job.start_time = job.start_time or _now()
            if job.outcome == "Completed":
                return self._request_file(job)
            job.state = job.outcome
            job.end_time = _now()
        elif job.polls > settings.polls // 2 or job.state == "Running":
            job.state = "Running"
            job.start_time = job.start_time or _now()
        self._note_peaks()
        return None

    def _finish_poll(self, job: ExportJobRecord, build: Build) -> Response:
        """Wait (without the lock) up to ``settings.build_wait`` for the file of a job this poll
        completes: ``Completed`` once it is built, ``Running`` until then.
        """
        built = build.wait(self.settings.build_wait) is not None
        with self._lock:
            if job.state not in ("Completed", "Failed", "Canceled"):
                job.state = "Completed" if built else "Running"
                if built:
                    job.end_time = _now()
            self._note_peaks()
            answer = job.answer()
        return Response(200, json.dumps(answer).encode())

    def _signature(self, job_id: str) -> str:
        return hmac.new(self._secret, f"{job_id}:{_SIGNED_EXPIRES}".encode(), hashlib.sha256).hexdigest()

    def _signed(self, job_id: str) -> str:
        return f"{self.file_path(job_id)}?Expires={_SIGNED_EXPIRES}&Signature={quote(self._signature(job_id))}"

    def file(self, request: Request, error: ErrorMaker, foreign: bool) -> Response:
        """``GET /pull/v1/export/files/{job_id}.jsonl[.gz]?Expires=...&Signature=...``.

        :param foreign: served by the file host: like S3, it refuses a request that carries an
            ``Authorization`` header besides the signature (the API's own origin ignores one).
        :param request: the request.
        :param error: makes error answers.
        """
        authorization = bool(request.headers.get("Authorization"))
        return self._file_answer(request, error, authorization and foreign)

    def note_file_request(self, host: str, request: Request, status: int) -> None:
        """Keep a request to a file URL in :attr:`file_requests` with the status answered (the
        sandbox calls it for every such request, faults and limits included).

        :param host: the host that answered.
        :param request: the request.
        :param status: the status answered.
        """
        authorization = bool(request.headers.get("Authorization"))
        with self._lock:
            self._file_requests.append(FileRequest(host, request.path, authorization, status))

    def _file_answer(self, request: Request, error: ErrorMaker, refuse_authorization: bool) -> Response:
        path = request.path
        match = _FILE_RE.match(path[len(EXPORT_FILES_PATH) :])
        if match is None:
            return error(404, path, "No such file")
        job_id = match.group(1)
        if refuse_authorization:
            return error(400, path, "Only one auth mechanism allowed: the URL is signed, send no Authorization header")
        signature = request.query.get("Signature", "")
        if request.query.get("Expires") != _SIGNED_EXPIRES or not hmac.compare_digest(signature, self._signature(job_id)):
            return error(403, path, "Signature does not match")
        with self._lock:
            job = self._jobs.get(job_id)
            build = job.build if job is not None and not job.expired else None
        file = build.wait(0) if build is not None and build.done else None
        if file is None or (match.group(2) is not None) != file.spec.gzip:
            return error(404, path, "No such file")
        return self._file_response(job_id, file)

    def _file_response(self, job_id: str, file: ExportFile) -> Response:
        headers = {"Content-Type": "application/x-ndjson"}
        if file.spec.gzip:
            if self.settings.content_encoding:
                headers["Content-Encoding"] = "gzip"
            else:
                headers["Content-Type"] = "application/gzip"
                headers["Content-Disposition"] = f'attachment; filename="{job_id}.jsonl.gz"'
        return Response(200, FileBody(file.path, file.size), headers=headers)


__all__ = [
    "EXPORT_FILES_PATH",
    "EXPORT_JOBS_PATH",
    "ExportJobRecord",
    "ExportService",
    "ExportSettings",
    "FileRequest",
    "RawRecords",
    "format_record",
    "to_day",
]
