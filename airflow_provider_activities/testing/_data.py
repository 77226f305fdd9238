"""Deterministic synthetic activity data: record ``i`` is a pure function of ``(seed, i)``.

Nothing is generated up front, so a sandbox of millions of activities starts instantly:

* **Timestamps** are non-decreasing (strictly increasing below 3.6 million activities an hour)
  in the index. Activities are shared out over the hours of ``[start, start + days)`` by a
  business-hours weighting (fewer at night and at weekends); inside an hour they are evenly spaced
  with a random jitter smaller than the spacing. The first index at or after a time is a
  bisection over that cheap function, so a date filter is an index range.
* **Activity types** and **participant counts** repeat with a period of :data:`PERIOD` indexes
  (a seeded table), so "the k-th email", "the number of calls before index i" and "the activity
  holding the o-th participant" are O(1) or one bisection in a 4096-entry table.
* **Other fields** come from a :class:`random.Random` seeded by ``(seed, i)``.
* **Ingestion times** (``created_at``) are the timestamp plus a lag of one minute to two days,
  from a hash of ``(seed, i)``.

All times here are epoch milliseconds (UTC). :mod:`._store` merges these records with live
inserts and answers queries; the server formats timestamps on the way out.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_left, bisect_right
from datetime import datetime, timezone
from typing import Any

from airflow_provider_activities.testing._pools import (
    UNICODE_CRM_WORDS,
    Account,
    Lead,
    Person,
    Pools,
    build_pools,
    crm_id,
    phone_number,
)

ACTIVITY_TYPES: tuple[str, ...] = ("email", "call", "meeting")
PERIOD = 4096
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MIN_LAG_MS = 60_000
MAX_LAG_MS = 2 * DAY_MS
EXTRA_INDEX_BASE = 1 << 62
"""Indexes of live-inserted records start here, so their uids never collide with generated ones."""

_MASK64 = (1 << 64) - 1
_TYPE_WEIGHTS = {"email": 0.55, "call": 0.2, "meeting": 0.25}
_PARTICIPANT_WEIGHTS = {
    "email": (5, 30, 25, 15, 10, 7, 5, 3),
    "meeting": (2, 20, 22, 18, 14, 10, 8, 6),
    "call": (15, 60, 15, 6, 2, 1, 1, 0),
}
_HOUR_WEIGHTS = (
    0.12, 0.1, 0.1, 0.1, 0.12, 0.15, 0.3, 0.6, 0.85, 1.0, 1.0, 1.0,
    0.9, 1.0, 1.0, 1.0, 1.0, 0.9, 0.6, 0.45, 0.35, 0.25, 0.2, 0.15,
)
_WEEKEND_WEIGHT = 0.12
_MEETING_STATUSES = ("completed",) * 7 + ("scheduled", "rescheduled", "canceled")
_EMAIL_STATUSES = ("to", "to", "cc", "bcc")
_MEETING_PARTICIPANT_STATUSES = ("accepted", "accepted", "accepted", "tentative", "declined", "needs_action")


def mix64(value: int) -> int:
    """The splitmix64 finaliser: a bijection of 64-bit integers that scatters the bits.

    :param value: a 64-bit integer.
    """
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def to_ms(value: datetime | int) -> int:
    """Epoch milliseconds of an aware ``datetime`` (naive is taken as UTC) or of an ``int`` (returned).

    :param value: the instant.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or epoch milliseconds, got {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class Generator:
    """The synthetic data set of one seed: ``activities`` records over ``days`` from ``start``.

    :param seed: any integer; the same seed gives the same data, byte for byte.
    :param activities: how many generated activities (before live inserts).
    :param start: the first instant activities can have (aware; naive is taken as UTC).
    :param days: the length of the period the activities spread over (may be fractional).
    """

    def __init__(self, seed: int, activities: int, start: datetime, days: float) -> None:
        if activities < 0:
            raise ValueError(f"activities must be >= 0, got {activities}")
        if days <= 0:
            raise ValueError(f"days must be > 0, got {days}")
        self.seed = seed
        self.count = activities
        self.start_ms = to_ms(start)
        self.span_ms = round(days * DAY_MS)
        self.end_ms = self.start_ms + self.span_ms
        base = mix64(hash_seed(seed))
        self._uid_key_a = mix64(base ^ 0xA5A5)
        self._uid_key_b = mix64(base ^ 0x5A5A)
        self._lag_key = mix64(base ^ 0x1A61)
        self._jitter_key = mix64(base ^ 0x717E)
        self._rng_key = (base & ((1 << 60) - 1)) << 64
        self.pools: Pools = build_pools(seed)
        self._users_by_id = {p.user_id: p for p in self.pools.users}
        self._accounts_by_id = {a.id: a for a in self.pools.accounts}
        self._leads_by_id = {lead.id: lead for lead in self.pools.leads}
        self._build_hours()
        self._build_period_tables()

    # ----- timestamps -------------------------------------------------------------------------

    def _build_hours(self) -> None:
        """Share the activities out over the hours by weight (largest remainders, deterministic)."""
        hours = max(1, -(-self.span_ms // HOUR_MS))
        self._hour_len = [min(HOUR_MS, self.span_ms - h * HOUR_MS) for h in range(hours)]
        weights = []
        for h in range(hours):
            moment = datetime.fromtimestamp((self.start_ms + h * HOUR_MS) / 1000, tz=timezone.utc)
            weight = _HOUR_WEIGHTS[moment.hour] * (_WEEKEND_WEIGHT if moment.weekday() >= 5 else 1.0)
            weights.append(weight * self._hour_len[h] / HOUR_MS)
        total = sum(weights)
        exact = [self.count * w / total for w in weights]
        counts = [int(x) for x in exact]
        short = self.count - sum(counts)
        by_remainder = sorted(range(hours), key=lambda h: (-(exact[h] - counts[h]), h))
        for h in by_remainder[:short]:
            counts[h] += 1
        self._cum = [0]
        for c in counts:
            self._cum.append(self._cum[-1] + c)

    def timestamp_ms(self, i: int) -> int:
        """The timestamp of generated activity ``i`` (epoch ms).

        :param i: the activity's index among the generated ones (0 to ``count - 1``).
        """
        cum = self._cum
        h = bisect_right(cum, i) - 1
        k = i - cum[h]
        c = cum[h + 1] - cum[h]
        length = self._hour_len[h]
        slot = length // c
        jitter = mix64(self._jitter_key ^ i) % slot if slot > 1 else 0
        return self.start_ms + h * HOUR_MS + (k * length) // c + jitter

    def timestamps(self, lo: int, hi: int) -> list[int]:
        """Timestamps of activities ``lo`` to ``hi - 1``, faster than one by one.

        :param lo: the first index.
        :param hi: the index after the last.
        """
        out: list[int] = []
        cum, key, start = self._cum, self._jitter_key, self.start_ms
        i = lo
        while i < hi:
            h = bisect_right(cum, i) - 1
            c = cum[h + 1] - cum[h]
            length = self._hour_len[h]
            slot = length // c
            base = start + h * HOUR_MS
            stop = min(hi, cum[h + 1])
            for j in range(i, stop):
                k = j - cum[h]
                jitter = mix64(key ^ j) % slot if slot > 1 else 0
                out.append(base + (k * length) // c + jitter)
            i = stop
        return out

    def index_at(self, ts_ms: int) -> int:
        """The first index whose timestamp is at or after ``ts_ms`` (``count`` if none).

        :param ts_ms: the instant, epoch ms.
        """
        h = (ts_ms - self.start_ms) // HOUR_MS
        if h < 0:
            return 0
        if h >= len(self._hour_len):
            return self.count
        lo, hi = self._cum[h], self._cum[h + 1]
        return bisect_left(range(lo, hi), ts_ms, key=self.timestamp_ms) + lo

    def lag_ms(self, i: int) -> int:
        """The ingestion lag of generated activity ``i``: mostly minutes, at most two days.

        :param i: the activity's index among the generated ones (0 to ``count - 1``).
        """
        h = mix64(self._lag_key ^ i)
        u = (h & 0xFFFF) / 65536.0
        v = ((h >> 16) & 0xFFFFFFFF) / 4294967296.0
        if u < 0.70:
            low, high = MIN_LAG_MS, 30 * 60_000
        elif u < 0.90:
            low, high = 30 * 60_000, 6 * HOUR_MS
        elif u < 0.98:
            low, high = 6 * HOUR_MS, DAY_MS
        else:
            low, high = DAY_MS, MAX_LAG_MS
        return low + int(v * (high - low))

    def created_ms(self, i: int) -> int:
        """``created_at`` of generated activity ``i``: its timestamp plus its ingestion lag.

        :param i: the activity's index among the generated ones (0 to ``count - 1``).
        """
        return self.timestamp_ms(i) + self.lag_ms(i)

    def uid(self, i: int) -> str:
        """The uid of activity ``i``: UUID-shaped; unique because its last 64 bits are a bijection of ``i``.

        :param i: the activity's index among the generated ones (0 to ``count - 1``).
        """
        a = mix64(self._uid_key_a ^ i)
        b = mix64(self._uid_key_b ^ i)
        a = (a & ~(0xF << 12)) | (0x4 << 12)  # version nibble "4", for looks
        text = f"{a:016x}{b:016x}"
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"

    # ----- types and participant counts (periodic tables) ----------------------------------------

    def _build_period_tables(self) -> None:
        rng = random.Random(f"peopleai-sandbox-period:{self.seed}")
        names = list(_TYPE_WEIGHTS)
        weights = list(_TYPE_WEIGHTS.values())
        types = [rng.choices(names, weights)[0] for _ in range(PERIOD)]
        for position, name in enumerate(names):  # every type occurs at least once per period
            if name not in types:
                types[position] = name
        self._types = types
        parts = [rng.choices(range(1, 9), _PARTICIPANT_WEIGHTS[t])[0] for t in types]
        self._parts = parts
        self._parts_prefix = [0]
        for n in parts:
            self._parts_prefix.append(self._parts_prefix[-1] + n)
        self._type_positions: dict[str, list[int]] = {t: [] for t in ACTIVITY_TYPES}
        self._type_prefix: dict[str, list[int]] = {}
        self._type_parts_prefix: dict[str, list[int]] = {}
        for position, name in enumerate(types):
            self._type_positions[name].append(position)
        for name in ACTIVITY_TYPES:
            prefix = [0]
            for t in types:
                prefix.append(prefix[-1] + (t == name))
            self._type_prefix[name] = prefix
            parts_prefix = [0]
            for position in self._type_positions[name]:
                parts_prefix.append(parts_prefix[-1] + parts[position])
            self._type_parts_prefix[name] = parts_prefix

    def activity_type(self, i: int) -> str:
        """The type of generated activity ``i``.

        :param i: the activity's index among the generated ones (0 to ``count - 1``).
        """
        return self._types[i % PERIOD]

    def participant_count(self, i: int) -> int:
        """``number_of_participants`` of generated activity ``i`` (1 to 8).

        :param i: the activity's index among the generated ones (0 to ``count - 1``).
        """
        return self._parts[i % PERIOD]

    def type_rank(self, activity_type: str, i: int) -> int:
        """How many activities of ``activity_type`` have an index below ``i``.

        :param activity_type: ``email``, ``call`` or ``meeting``.
        :param i: an index among all generated activities.
        """
        q, r = divmod(i, PERIOD)
        prefix = self._type_prefix[activity_type]
        return q * prefix[PERIOD] + prefix[r]

    def type_index(self, activity_type: str, k: int) -> int:
        """The index of the ``k``-th (0-based) activity of ``activity_type``.

        :param activity_type: ``email``, ``call`` or ``meeting``.
        :param k: the rank among the activities of that type.
        """
        positions = self._type_positions[activity_type]
        q, r = divmod(k, len(positions))
        return q * PERIOD + positions[r]

    def participants_before(self, i: int) -> int:
        """How many participants activities ``0`` to ``i - 1`` hold together.

        :param i: an index among all generated activities.
        """
        q, r = divmod(i, PERIOD)
        return q * self._parts_prefix[PERIOD] + self._parts_prefix[r]

    def locate_participant(self, offset: int) -> tuple[int, int]:
        """``(activity index, slot)`` of the ``offset``-th participant of all activities.

        :param offset: the participant's position among all participants, in served order.
        """
        q, rem = divmod(offset, self._parts_prefix[PERIOD])
        position = bisect_right(self._parts_prefix, rem) - 1
        return q * PERIOD + position, rem - self._parts_prefix[position]

    def type_participants_before(self, activity_type: str, k: int) -> int:
        """How many participants the first ``k`` activities of ``activity_type`` hold together.

        :param activity_type: ``email``, ``call`` or ``meeting``.
        :param k: how many activities of that type.
        """
        prefix = self._type_parts_prefix[activity_type]
        q, r = divmod(k, len(prefix) - 1)
        return q * prefix[-1] + prefix[r]

    def type_locate_participant(self, activity_type: str, offset: int) -> tuple[int, int]:
        """``(k, slot)``: the ``offset``-th participant of activities of one type is in its ``k``-th activity.

        :param activity_type: ``email``, ``call`` or ``meeting``.
        :param offset: the participant's position among the participants of that type.
        """
        prefix = self._type_parts_prefix[activity_type]
        q, rem = divmod(offset, prefix[-1])
        position = bisect_right(prefix, rem) - 1
        return q * (len(prefix) - 1) + position, rem - prefix[position]

    # ----- records -----------------------------------------------------------------------------

    def activity(self, i: int) -> dict[str, Any]:
        """Generated activity ``i`` with every field of the vendor schema (times in epoch ms).

        :param i: the activity's index among the generated ones (0 to ``count - 1``).
        """
        ts = self.timestamp_ms(i)
        return self.make_activity(
            i, ts, ts + self.lag_ms(i), self.activity_type(i), self.participant_count(i)
        )

    def participants(self, i: int) -> list[dict[str, Any]]:
        """The participants of generated activity ``i``, in served order (by ``id``, nulls last).

        :param i: the activity's index among the generated ones (0 to ``count - 1``).
        """
        return self.make_participants(i, self.activity(i))

    def make_activity(self, i: int, ts: int, created: int, activity_type: str, participants: int) -> dict[str, Any]:
        """An activity record for index ``i`` (generated, or :data:`EXTRA_INDEX_BASE` + n for inserts).

        :param i: the record's index; seeds its random fields and makes its uid.
        :param ts: its timestamp (epoch ms).
        :param created: its ``created_at`` (epoch ms).
        :param activity_type: ``email``, ``call`` or ``meeting``.
        :param participants: its ``number_of_participants``.
        """
        rng = random.Random(self._rng_key | (i << 1))
        rand = rng.random
        pools = self.pools
        user = pools.users[int(rand() * len(pools.users))]
        account: Account | None = None
        opportunity = None
        lead = None
        u = rand()
        matched_to = "opportunity" if u < 0.35 else "account" if u < 0.7 else "lead" if u < 0.8 else "none"
        if matched_to in ("opportunity", "account"):
            account = pools.accounts[int(rand() * len(pools.accounts))]
            if matched_to == "opportunity":
                if account.opportunities:
                    opportunity = account.opportunities[int(rand() * len(account.opportunities))]
                else:
                    matched_to = "account"
        elif matched_to == "lead":
            lead = pools.leads[int(rand() * len(pools.leads))]
        opportunity_ids: list[int] | None
        opportunity_crm_ids: list[str] | None
        if opportunity is not None and account is not None:
            others = [o for o in account.opportunities if o is not opportunity and rand() < 0.3]
            opportunity_ids = [opportunity.id] + [o.id for o in others]
            opportunity_crm_ids = [opportunity.crm_id] + [o.crm_id for o in others]
        elif account is not None:
            opportunity_ids, opportunity_crm_ids = ([], []) if rand() < 0.5 else (None, None)
        else:
            opportunity_ids = opportunity_crm_ids = None

        if activity_type == "email":
            direction = "outbound" if rand() < 0.55 else "inbound"
            subtype = f"{direction} email"
        elif activity_type == "meeting":
            direction = "outbound" if rand() < 0.7 else "inbound"
            subtype = "conference call" if rand() < 0.7 else "in-person meeting"
        else:
            direction = "outbound" if rand() < 0.75 else "inbound"
            subtype = f"{direction} call"

        v = rand()
        if v < 0.35:
            record_crm_id = None
        elif v < 0.37:
            record_crm_id = f"ext-{UNICODE_CRM_WORDS[int(rand() * len(UNICODE_CRM_WORDS))]}-{int(rand() * 100_000)}"
        else:
            record_crm_id = crm_id(rng, "00U" if activity_type == "meeting" else "00T")

        if activity_type == "email":
            source_id = f"<{rng.getrandbits(96):024x}@mail.{user.email.split('@')[1]}>"
        elif activity_type == "meeting":
            source_id = f"{rng.getrandbits(104):026x}"
        else:
            source_id = record_crm_id or crm_id(rng, "00T")

        meeting_start = meeting_end = meeting_status = None
        in_reply_to = outbound_phone = None
        duration: float | None = None
        if activity_type == "meeting":
            minutes = (15, 30, 30, 30, 45, 60, 60, 90)[int(rand() * 8)]
            meeting_start = ts
            meeting_end = ts + minutes * 60_000
            meeting_status = _MEETING_STATUSES[int(rand() * len(_MEETING_STATUSES))]
            duration = float(minutes * 60)
        elif activity_type == "email":
            if rand() < 0.4:
                in_reply_to = f"<{rng.getrandbits(96):024x}@mail.{user.email.split('@')[1]}>"
        else:
            if direction == "outbound":
                outbound_phone = user.phone_number or phone_number(rng)
            duration = round(20 + rand() * 2400, 3)

        w = rand()
        is_partner = None if w < 0.3 else (w < 0.35)
        w = rand()
        with_partner = None if w < 0.3 else (w < 0.38)
        return {
            "crm_id": record_crm_id,
            "user_id": user.user_id,
            "is_partner": is_partner,
            "with_partner": with_partner,
            "opportunity_id": opportunity.id if opportunity else None,
            "opportunity_ids": opportunity_ids,
            "opportunity_crm_id": opportunity.crm_id if opportunity else None,
            "opportunity_crm_ids": opportunity_crm_ids,
            "opportunity_stage_id": opportunity.stage if opportunity else None,
            "account_id": account.id if account else None,
            "account_crm_id": account.crm_id if account else None,
            "matched_to": matched_to,
            "lead_id": lead.id if lead else None,
            "lead_crm_id": lead.crm_id if lead else None,
            "created_at": created,
            "activity_type": activity_type,
            "subtype": subtype,
            "timestamp": ts,
            "external": participants > 1 and (account is not None or lead is not None or rand() < 0.6),
            "uid": self.uid(i),
            "activity_source_id": source_id,
            "direction": direction,
            "meeting_start_time": meeting_start,
            "meeting_end_time": meeting_end,
            "meeting_status": meeting_status,
            "in_reply_to_source_id": in_reply_to,
            "outbound_phone_number": outbound_phone,
            "duration": duration,
            "number_of_participants": participants,
        }

    def make_participants(self, i: int, activity: dict[str, Any]) -> list[dict[str, Any]]:
        """The participants of the activity record ``activity`` of index ``i`` (see :meth:`make_activity`).

        The team member the activity was ingested for is always a participant; the others are
        colleagues or, for external activities, the account's contacts, the lead, or people known
        only by e-mail (``id`` null). Sorted by ``id`` with nulls last, then e-mail.

        :param i: the activity's index (generated, or ``EXTRA_INDEX_BASE`` plus the number of a live
            insert): it seeds the choices.
        :param activity: the activity record they take part in.
        """
        rng = random.Random(self._rng_key | (i << 1) | 1)
        rand = rng.random
        pools = self.pools
        count = activity["number_of_participants"]
        activity_type = activity["activity_type"]
        user_id = activity["user_id"]
        owner = self._users_by_id[user_id] if count else None
        people: list[Person] = [owner] if owner else []
        used_ids = {owner.id} if owner else set()
        externals_wanted = 0
        if activity["external"] and count > 1:
            externals_wanted = max(1, round((count - 1) * (0.4 + 0.6 * rand())))
        account = self._account(activity["account_id"])
        lead = self._lead(activity["lead_id"])
        guests = 0
        while len(people) < count:
            if externals_wanted > 0:
                externals_wanted -= 1
                if lead is not None and lead.person.id not in used_ids:
                    person = lead.person
                elif account is not None and rand() < 0.9:
                    person = account.contacts[int(rand() * len(account.contacts))]
                    if person.id in used_ids:
                        person = next((c for c in account.contacts if c.id not in used_ids), person)
                else:
                    person = None
                if person is None or person.id in used_ids:
                    guests += 1
                    domain = account.domain if account else "unknown-guest.example"
                    person = Person(
                        id=None,
                        user_id=None,
                        name=None if rand() < 0.5 else f"Guest {guests}",
                        email=f"guest{guests}.{rng.getrandbits(24):06x}@{domain}",
                        job_title=None,
                        phone_number=None,
                        seniority=None,
                        department=None,
                        external=True,
                    )
            else:
                person = pools.users[int(rand() * len(pools.users))]
                if person.id in used_ids:
                    person = next(p for p in pools.users if p.id not in used_ids)
            if person.id is not None:
                used_ids.add(person.id)
            people.append(person)

        outbound_or_alone = activity["direction"] == "outbound" or len(people) == 1
        originator = 0 if outbound_or_alone else 1 + int(rand() * (len(people) - 1))
        activity_duration = activity["duration"]
        statuses: tuple[str, ...]
        if activity_type == "meeting":
            statuses = _MEETING_PARTICIPANT_STATUSES
        elif activity_type == "email":
            statuses = _EMAIL_STATUSES
        else:
            statuses = ("connected", "connected", "no_answer")
        records = []
        for slot, person in enumerate(people):
            if slot == originator:
                status = "from" if activity_type == "email" else "organizer" if activity_type == "meeting" else "connected"
            else:
                status = statuses[int(rand() * len(statuses))]
            if activity_duration is None or status in ("declined", "no_answer"):
                duration = 0
            else:
                duration = int(activity_duration * (0.5 + 0.5 * rand())) if slot != originator else int(activity_duration)
            records.append(
                {
                    "user_id": person.user_id,
                    "id": person.id,
                    "name": person.name,
                    "email": person.email,
                    "job_title": person.job_title,
                    "phone_number": person.phone_number,
                    "seniority": person.seniority,
                    "department": person.department,
                    "external": person.external,
                    "original": rand() < 0.9,
                    "status": status,
                    "source_id": activity["activity_source_id"],
                    "is_originator": slot == originator,
                    "activity_uid": activity["uid"],
                    "activity_crm_id": activity["crm_id"],
                    "account_id": activity["account_id"],
                    "account_crm_id": activity["account_crm_id"],
                    "opportunity_id": activity["opportunity_id"],
                    "opportunity_crm_id": activity["opportunity_crm_id"],
                    "lead_id": activity["lead_id"],
                    "lead_crm_id": activity["lead_crm_id"],
                    "activity_timestamp": activity["timestamp"],
                    "created_at": activity["created_at"],
                    "deleted": rand() < 0.02,
                    "duration": duration,
                }
            )
        records.sort(key=participant_sort_key)
        return records

    def _account(self, account_id: int | None) -> Account | None:
        return None if account_id is None else self._accounts_by_id[account_id]

    def _lead(self, lead_id: int | None) -> Lead | None:
        return None if lead_id is None else self._leads_by_id[lead_id]


def participant_sort_key(record: dict[str, Any]) -> tuple[bool, int, str]:
    """Order of participants inside one activity: by ``id``, those without one last (by e-mail).

    :param record: a participant record.
    """
    participant_id = record["id"]
    return (participant_id is None, participant_id or 0, record["email"] or "")


def hash_seed(seed: int) -> int:
    """A 64-bit integer from any integer seed (negative and huge seeds included).

    :param seed: any integer.
    """
    return int.from_bytes(hashlib.sha256(f"peopleai-sandbox:{seed}".encode()).digest()[:8], "big")
