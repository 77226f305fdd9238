"""Explicit Arrow schemas of the records the provider writes, field by field from the vendor documents.

The vendor's Activity API document describes its activity and participant records (vendor type
names ``integer``, ``boolean``, ``string``, ``float``, ``timestamp``). They map to Arrow as:

* ``integer`` -> ``int64``; ``boolean`` -> ``bool``; ``string`` -> ``string``;
* ``timestamp`` -> ``timestamp("ms", tz="UTC")`` (the API sends epoch milliseconds or ISO-8601);
* ``float`` (activity ``duration``, seconds) -> ``float64``;
* the two list fields the vendor types by their items: ``opportunity_ids`` -> ``list<int64>``,
  ``opportunity_crm_ids`` -> ``list<string>``.

Every field is nullable (the API omits fields that do not apply, e.g. meeting-only fields on an
e-mail) and carries the vendor's description in its metadata (``{"description": ...}``). Each
schema ends with ``_extra``: a JSON object (sorted keys) of the fields of a record the schema
does not know, so nothing the API sends is lost when it adds a field.

Schema metadata holds no wall-clock values: the same schema always serialises to the same bytes,
which keeps the Parquet files of a rerun byte-identical and :func:`schema_fingerprint` stable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

TIMESTAMP = pa.timestamp("ms", tz="UTC")
"""The Arrow type of every timestamp field: epoch milliseconds, UTC."""

EXTRA_FIELD = "_extra"
"""The name of the last column of each schema: JSON of the fields the schema does not know."""

ACTIVITY_PER_RECORD_FIELDS: frozenset[str] = frozenset(
    {"uid", "crm_id", "activity_source_id", "in_reply_to_source_id", "timestamp", "created_at", "ingested_at",
     "meeting_start_time", "meeting_end_time"}
)
"""Fields of :data:`ACTIVITY_SCHEMA` whose values differ from activity to activity (identifiers,
millisecond timestamps): the activities operator writes them without a Parquet dictionary,
which for such values only costs encoding time and file size."""

RAW_ACTIVITY_PER_RECORD_FIELDS: frozenset[str] = frozenset({"uid", "source_id", "timestamp", "ingest_timestamp"})
"""The same for :data:`RAW_ACTIVITY_SCHEMA` (the bulk export operator)."""

_EXTRA_DESCRIPTION = (
    "JSON object (sorted keys) of the record's fields this schema does not know; null when there are none. "
    "Not a vendor field: added by the provider so that new API fields are kept."
)


def _field(name: str, type_: pa.DataType, description: str) -> pa.Field:
    """A nullable field with its description in the metadata."""
    return pa.field(name, type_, nullable=True, metadata={"description": description})


# --------------------------------------------------------------------------------------------
# Activity API: activities (GET /v0/public/activities[/{email|call|meeting}])
# --------------------------------------------------------------------------------------------

ACTIVITY_SCHEMA: pa.Schema = pa.schema(
    [
        _field("crm_id", pa.string(), "Unique CRM identifier for the pushed activity"),
        _field("user_id", pa.int64(), "Unique backstory identifier for the team member we ingested activity for"),
        _field(
            "is_partner",
            pa.bool_(),
            "Indicated whether an activity was matched to a partner account. The valid values are true, false, and null.",
        ),
        _field(
            "with_partner",
            pa.bool_(),
            "Indicated whether an activity had partner involvement. The valid values are true, false, and null.",
        ),
        _field("opportunity_id", pa.int64(), "Unique backstory identifier for the opportunity we matched to"),
        _field(
            "opportunity_ids",
            pa.list_(pa.int64()),
            "List of backstory identifiers for all opportunities matched to the activity",
        ),
        _field("opportunity_crm_id", pa.string(), "Unique CRM identifier for the opportunity we matched to"),
        _field(
            "opportunity_crm_ids",
            pa.list_(pa.string()),
            "List of CRM identifiers for all opportunities matched to the activity",
        ),
        _field(
            "opportunity_stage_id",
            pa.string(),
            "Stage of an opportunity at the time when the activity was processed",
        ),
        _field("account_id", pa.int64(), "Unique backstory identifier for the account we matched to"),
        _field("account_crm_id", pa.string(), "Unique CRM identifier for the account we matched to"),
        _field("matched_to", pa.string(), 'One of: "account", "opportunity", "lead", "none"'),
        _field("lead_id", pa.int64(), "Unique backstory identifier for the lead we matched to"),
        _field("lead_crm_id", pa.string(), "Unique CRM identifier for the lead we matched to"),
        _field("created_at", TIMESTAMP, "Denotes when the activity was created"),
        _field(
            "activity_type",
            pa.string(),
            'backstory classifies activity type. One of: "email", "meeting", "call"',
        ),
        _field(
            "subtype",
            pa.string(),
            'Classification of activity: "inbound email","outbound email","conference call","in-person meeting"',
        ),
        _field("timestamp", TIMESTAMP, "Time of the activity"),
        _field("external", pa.bool_(), "Indicate whether the activity has any external participants"),
        _field("uid", pa.string(), "Unique peopl.ai identifier for the activity"),
        _field(
            "activity_source_id",
            pa.string(),
            "Unique identifier for the activity taken from the source system. In case of calls, the ID of the "
            "activity in CRM",
        ),
        _field(
            "direction",
            pa.string(),
            'Direction of the activity ("outbound": outbound from the user\'s organization, "inbound": outbound '
            "from anyone else)",
        ),
        _field("meeting_start_time", TIMESTAMP, "(meeting only) Start time of the meeting activity"),
        _field("meeting_end_time", TIMESTAMP, "(meeting only) End time of the meeting activity"),
        _field(
            "meeting_status",
            pa.string(),
            '(meeting only) Status of the meeting. One of: "scheduled", "rescheduled", "completed", or "canceled"',
        ),
        _field(
            "in_reply_to_source_id",
            pa.string(),
            "(emails only) Unique source system identifier of the activity being replied to",
        ),
        _field("outbound_phone_number", pa.string(), "(calls only) Outbound phone number"),
        _field("duration", pa.float64(), "Duration of activity in seconds"),
        _field("number_of_participants", pa.int64(), "Indicates the number of participants engaged"),
        _field(
            "ingested_at",
            TIMESTAMP,
            "When the activity was ingested or reprocessed. Not in the vendor's Activity API schema; sent by "
            "some deployments, null otherwise.",
        ),
        _field(EXTRA_FIELD, pa.string(), _EXTRA_DESCRIPTION),
    ]
)
"""One activity record (all types; type-specific fields are null for the other types)."""


# --------------------------------------------------------------------------------------------
# Activity API: participants (GET /v0/public/activities/participants)
# --------------------------------------------------------------------------------------------

PARTICIPANT_SCHEMA: pa.Schema = pa.schema(
    [
        _field(
            "user_id",
            pa.int64(),
            "Unique backstory identifier for the team member we ingested activity for. Present only for users.",
        ),
        _field("id", pa.int64(), "Unique backstory identifier for participants"),
        _field("name", pa.string(), "Participant name"),
        _field("email", pa.string(), "Email of activity participant"),
        _field("job_title", pa.string(), "Job title of activity participant"),
        _field("phone_number", pa.string(), "Phone number of the activity participant"),
        _field("seniority", pa.string(), "The backstory-classified seniority of the contact's job title"),
        _field("department", pa.string(), "The backstory-classified department of the contact's job title"),
        _field("external", pa.bool_(), "Denotes if the participant is internal or external"),
        _field("original", pa.bool_(), "Denotes if the participant was on the original activity copy"),
        _field("status", pa.string(), "Status of activity participant"),
        _field("source_id", pa.string(), "Original source ID of activity from the provider"),
        _field("is_originator", pa.bool_(), "Denotes if participant is the originator of the activity"),
        _field("activity_uid", pa.string(), "Unique backstory identifier for the activity"),
        _field("activity_crm_id", pa.string(), "Unique CRM identifier for the pushed activity"),
        _field("account_id", pa.int64(), "Unique backstory identifier for the account we matched to"),
        _field("account_crm_id", pa.string(), "Unique CRM identifier for the account we matched to"),
        _field("opportunity_id", pa.int64(), "Unique backstory identifier for the opportunity we matched to"),
        _field("opportunity_crm_id", pa.string(), "Unique CRM identifier for the opportunity we matched to"),
        _field("lead_id", pa.int64(), "Unique backstory identifier for the lead we matched to"),
        _field("lead_crm_id", pa.string(), "Unique CRM identifier for the lead we matched to"),
        _field("activity_timestamp", TIMESTAMP, "Time of the activity"),
        _field("created_at", TIMESTAMP, "Denotes when the activity was created"),
        _field("deleted", pa.bool_(), "Denotes if the activity was deleted"),
        _field("duration", pa.int64(), "Duration for participants in seconds"),
        _field(EXTRA_FIELD, pa.string(), _EXTRA_DESCRIPTION),
    ]
)
"""One participant of one activity."""


# --------------------------------------------------------------------------------------------
# Raw Activity Data API (bulk export jobs), from the vendor's raw activity data schema
# --------------------------------------------------------------------------------------------
# The export's records are nested. The vendor's shared objects map to Arrow as:
#   "Array of String" -> list<string>; "Array of <Object>" -> list<struct>; "Type of: <Object>" -> struct;
#   "yyyy-MM-ddTHH:mm:ssZ (UTC)" -> timestamp("ms", tz="UTC"); "yyyy-MM-dd (UTC)" -> date32;
#   Integer -> int64; Boolean -> bool; String -> string.
# The shared objects Account, Opportunity, Lead and "Matched CRM object" are documented but no field
# of the schema refers to them: a record carrying them keeps them in ``_extra``.

DATE = pa.date32()
"""The Arrow type of the export's day fields (campaign start and end dates)."""


def _struct(*fields: pa.Field) -> pa.StructType:
    return pa.struct(list(fields))


RAW_TEAM = _struct(
    _field("crm_id", pa.string(), "Unique CRM identifier for the team (empty for teams created in Backstory)"),
    _field("team_name", pa.string(), "Team name"),
    _field(
        "parent_team_crm_id",
        pa.string(),
        "Unique CRM identifier for the team's parent team (empty for teams created in Backstory)",
    ),
)
"""Team (shared object): the team of an internal participant."""

RAW_CAMPAIGN = _struct(
    _field("crm_id", pa.string(), "Unique CRM identifier for the campaign"),
    _field("name", pa.string(), "Campaign name"),
    _field("start_date", DATE, "Start date for the campaign"),
    _field("end_date", DATE, "End date for the campaign"),
)
"""Campaign (shared object)."""

RAW_CRM_STATUS = _struct(
    _field("pushed", pa.bool_(), "Boolean indicating whether or not the activity was pushed to CRM"),
    _field("push_time", TIMESTAMP, "The time the CRM push was initiated"),
    _field("crm_id", pa.string(), "Unique CRM identifier for the pushed object"),
    _field("matched_to", pa.string(), 'One of: "account", "opportunity", "lead", "none"'),
)
"""CRM status (shared object): ``crm_status`` and the experimental ``internal_match_status``."""

RAW_STATS = _struct(
    _field("total_participants", pa.int64(), "Total number of participants in the activity"),
    _field("internal_participants", pa.int64(), "Total number of internal participants in the activity"),
    _field("external_participants", pa.int64(), "Total number of external participants in the activity"),
    _field("contacts_participants", pa.int64(), "Total number of contacts on the activity"),
    _field("participants_on_to_line", pa.int64(), "(emails only) Total number of participants on the To: line"),
    _field("participants_on_cc_line", pa.int64(), "(emails only) Total number of participants on the Cc: line"),
    _field(
        "accepted_participants", pa.int64(), "(meetings only) Total number of participants who have accepted the meeting"
    ),
    _field(
        "declined_participants", pa.int64(), "(meetings only) Total number of participants who have declined the meeting"
    ),
    _field(
        "tentative_participants",
        pa.int64(),
        "(meetings only) Total number of participants who have tentatively accepted the meeting",
    ),
)
"""Activity statistics (shared object)."""

RAW_PARTICIPANT = _struct(
    _field("peopleai_id", pa.string(), "Unique Backstory identifier for the person"),
    _field("crm_id", pa.string(), "Unique CRM identifier for the person"),
    _field("name", pa.string(), "(User) name of the person"),
    _field("title", pa.string(), "Title for the person, as taken from People Graph"),
    _field("phone", pa.string(), "Phone number for the person"),
    _field("email", pa.string(), "Email address for the person"),
    _field("role", pa.string(), 'One of: "originator", "participant", "optional_participant"'),
    _field("type", pa.string(), 'One of: "internal", "external"'),
    _field("time_spent", pa.int64(), "Time spent on the activity by the participant in seconds"),
    _field("team", RAW_TEAM, "The team of the internal participant"),
    _field("matched_as", pa.string(), 'For external participants, one of: "contact", "lead", "none"'),
    _field(
        "status",
        pa.string(),
        '(meetings only) For meeting participants, one of: "pending", "accepted", "declined", "tentative"',
    ),
)
"""Participant (shared object, extends Person)."""

RAW_ACTIVITY_SCHEMA: pa.Schema = pa.schema(
    [
        _field("uid", pa.string(), "Unique Backstory identifier for the activity"),
        _field(
            "source_id",
            pa.string(),
            "Unique identifier for the activity taken from the source system. In case of calls, the ID of the "
            "activity in CRM",
        ),
        _field("type", pa.string(), 'Backstory-classified activity type. One of: "email", "meeting", "call"'),
        _field("subject", pa.string(), "Subject line of email"),
        _field("summary", pa.string(), "Subject line of meeting"),
        _field(
            "direction",
            pa.string(),
            'Direction of the activity ("outbound": outbound from the user\'s organization, "inbound": outbound '
            'from anyone else, "internal": internal-only activity)',
        ),
        _field("timestamp", TIMESTAMP, "Time of the activity"),
        _field("ingest_timestamp", TIMESTAMP, "Time of activity ingestion or reprocessing"),
        _field("tags", pa.list_(pa.string()), "An array of the Backstory tags associated with the activity"),
        _field("campaigns", pa.list_(RAW_CAMPAIGN), "The activity's associated campaigns"),
        _field("crm_status", RAW_CRM_STATUS, "CRM status"),
        _field("stats", RAW_STATS, "Activity statistics"),
        _field("participants", pa.list_(RAW_PARTICIPANT), "Activity participants"),
        _field(
            "in_reply_to_source_id",
            pa.string(),
            "(emails only) Unique source system identifier of the activity being replied to",
        ),
        _field("reply_received", pa.bool_(), "(emails only) Flag indicating a reply has been received for the activity"),
        _field(
            "attachment_file_names",
            pa.list_(pa.string()),
            "(emails only) File names of the files attached to the email activity",
        ),
        _field("start_time", TIMESTAMP, "(meetings only) Start time of the meeting activity"),
        _field("end_time", TIMESTAMP, "(meetings only) End time of the meeting activity"),
        _field("duration", pa.int64(), "(meetings and calls only) Duration of the meeting in seconds"),
        _field("all_day", pa.bool_(), "(meetings only) A flag indicating the meeting is an all-day meeting"),
        _field("location", pa.string(), "(meetings only) Location for the meeting"),
        _field("outbound_phone_number", pa.string(), "(calls only) Outbound phone number"),
        _field(
            "status",
            pa.string(),
            '(meetings only) Status of the meeting. One of: "scheduled", "rescheduled", "completed", or "canceled"',
        ),
        _field("created", TIMESTAMP, "Denotes when the activity was created"),
        _field(
            "internal_match_status",
            RAW_CRM_STATUS,
            "(experimental) Match details for internal-only activities",
        ),
        _field(
            EXTRA_FIELD,
            pa.string(),
            _EXTRA_DESCRIPTION
            + " Keys unknown inside a nested object are kept too, by path: \"crm_status.new_key\", "
            "\"participants[2].new_key\".",
        ),
    ]
)
"""One record of a Raw Activity Data export (all activity types; fields of other types null)."""


def file_schema(schema: pa.Schema, partition_columns: Iterable[str]) -> pa.Schema:
    """The schema of the Parquet files of a dataset: ``schema`` without its partition columns.

    Partition columns live only in the directory names (``activity_type=email/...``); Spark and
    Athena refuse a column that is both in the path and in the files.

    :param schema: the record schema (e.g. :data:`ACTIVITY_SCHEMA`).
    :param partition_columns: the partition keys of the layout. Keys that are not fields of
        ``schema`` (such as ``activity_date``, derived from a timestamp) are ignored.
    :return: ``schema`` with those fields removed, field order and metadata kept.
    """
    dropped = set(partition_columns)
    return pa.schema([field for field in schema if field.name not in dropped], metadata=schema.metadata)


def schema_fingerprint(schema: pa.Schema) -> str:
    """A stable identity of a schema: the sha256 (hex) of a canonical JSON form of it.

    The canonical form lists, in order, every field's name, type (nested types field by field),
    nullability and metadata, plus the schema metadata; keys Arrow adds itself (``ARROW:*``,
    ``pandas``) and the name of a list's item field (``item`` in Arrow, ``element`` in Parquet)
    are left out. So a schema and the same schema read back from a Parquet footer have the same
    fingerprint, in any process and on any run.

    :param schema: the schema to identify.
    :return: 64 hex digits.
    """
    canonical = {
        "fields": [_canonical_field(field) for field in schema],
        "metadata": _canonical_metadata(schema.metadata),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _canonical_metadata(metadata: dict[bytes, bytes] | None) -> dict[str, str]:
    if not metadata:
        return {}
    decoded = {key.decode("utf-8", "replace"): value.decode("utf-8", "replace") for key, value in metadata.items()}
    return {key: value for key, value in decoded.items() if not key.startswith("ARROW:") and key != "pandas"}


def _canonical_field(field: pa.Field, with_name: bool = True) -> dict[str, Any]:
    described: dict[str, Any] = {
        "type": _canonical_type(field.type),
        "nullable": field.nullable,
        "metadata": _canonical_metadata(field.metadata),
    }
    if with_name:
        described["name"] = field.name
    return described


def _canonical_type(type_: pa.DataType) -> Any:
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        kind = "fixed_size_list" if pa.types.is_fixed_size_list(type_) else str(type_).split("<", 1)[0]
        described = {kind: _canonical_field(type_.value_field, with_name=False)}
        if pa.types.is_fixed_size_list(type_):
            described["size"] = type_.list_size
        return described
    if pa.types.is_struct(type_):
        return {"struct": [_canonical_field(type_.field(i)) for i in range(type_.num_fields)]}
    if pa.types.is_map(type_):
        return {
            "map": {
                "key": _canonical_field(type_.key_field, with_name=False),
                "item": _canonical_field(type_.item_field, with_name=False),
                "keys_sorted": type_.keys_sorted,
            }
        }
    return str(type_)
