"""Client settings: the ``peopleai`` connection's fields and extras, validated once.

The connection maps to the API like this:

* ``login`` is the API key (OAuth2 ``client_id``), ``password`` the API secret (``client_secret``);
* ``host`` is the base URL, ``https://api.people.ai`` when empty. It may carry a scheme and a
  port (``http://127.0.0.1:8765``). A host without a scheme means ``https``. Plain ``http`` is
  accepted for loopback hosts only, so a client secret never crosses a network in clear;
* every other setting is an extra, listed in :data:`EXTRA_FIELDS` with its default.

Airflow's connection form hides the value of any extra whose name contains a word of its secrets
masker (``token``, ``secret``, ``password``, ``proxy``, ...): it shows ``***`` instead, and saving
the form stores ``***``. No extra here has such a name (the token endpoint's path is ``auth_path``,
formerly ``token_path``, which is still read), and a ``***`` found in any extra is taken as unset,
with a warning, so a connection saved from the form works.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_activities.api.policy import RETRY_AFTER_MAX

if TYPE_CHECKING:
    from airflow_provider_activities.api.errors import ConnectionSettingsError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.people.ai"

MASKED_PLACEHOLDER = "***"
"""What Airflow's secrets masker shows (and a form saved unchanged stores) in place of a hidden value."""

EXTRA_ALIASES: dict[str, str] = {"token_path": "auth_path"}
"""Former names of extras, still read: former name -> current name (the current name wins)."""

PATH_EXTRAS = ("auth_path", "export_jobs_path", "export_status_path", "export_data_path")
"""Extras that are URL paths: each must start with ``/``."""

JOB_PATH_EXTRAS = ("export_status_path", "export_data_path")
"""Path extras that name one export job: each must hold ``{job_id}``."""

CONNECTION_TEST_TIMEOUT = 4.0
"""Seconds a connection test waits to connect, and for each read (see :meth:`ClientConfig.for_connection_test`)."""

CONNECTION_TEST_RETRIES = 1
"""Retries a connection test allows each of its two requests."""

CONNECTION_TEST_BACKOFF = 0.5
"""The longest wait, in seconds, before a connection test's retry (a ``Retry-After`` included)."""


@dataclass(frozen=True)
class ExtraField:
    """One connection extra, as shown in the Airflow connection form.

    :param label: the form label.
    :param description: the help text under the field.
    :param json_type: the JSON-schema type (``string``, ``integer``, ``number``, ``boolean``).
    :param default: the value used when the extra is absent.
    """

    label: str
    description: str
    json_type: str
    default: Any


EXTRA_FIELDS: dict[str, ExtraField] = {
    "auth_path": ExtraField(
        "Auth endpoint path",
        "Path of the OAuth2 client-credentials token endpoint, starting with /. Formerly the extra "
        "`token_path` (still read when this one is empty).",
        "string",
        "/auth/v1/tokens",
    ),
    "page_size": ExtraField(
        "Page size",
        "Records asked for per page (the API's `limit`, 1 to 100000). Empty: as many as the server takes "
        "and memory allows, learnt from its answers (fewer requests under the rate limit).",
        "integer",
        None,
    ),
    "requests_per_second": ExtraField(
        "Requests per second",
        "Most requests this client sends in any one second (the API allows 5).",
        "number",
        5.0,
    ),
    "max_concurrency": ExtraField(
        "Max concurrency", "Most requests in flight at once (the API allows 10).", "integer", 10
    ),
    "rate_limit_redis_conn_id": ExtraField(
        "Shared rate budget (Redis connection id)",
        "Id of an Airflow connection of type redis (host, port, password, `db` in its extras). Set: every "
        "process and host on this API key shares requests_per_second and max_concurrency through it. "
        "Needs airflow-provider-activities[redis]. Empty: each process paces on its own.",
        "string",
        None,
    ),
    "timeout": ExtraField("Timeout (s)", "Connect and read timeout of every request, in seconds.", "number", 60.0),
    "max_retries": ExtraField(
        "Max retries",
        "Retries of a request after 429, 5xx, a dropped connection, a timeout or an invalid body.",
        "integer",
        8,
    ),
    "backoff_base": ExtraField(
        "Backoff base (s)", "First retry delay; it doubles on each retry, with jitter.", "number", 1.0
    ),
    "backoff_max": ExtraField("Backoff cap (s)", "Longest delay between two retries.", "number", 30.0),
    "max_response_bytes": ExtraField(
        "Max response size (bytes)",
        "Largest answer body accepted, in bytes; a larger page fails the task at once (not retried). "
        "Empty: 64 MiB, or 16 KiB per record of page_size when that is more.",
        "integer",
        None,
    ),
    "arrow_parsing": ExtraField(
        "Parse pages with Arrow",
        "Parse pages straight into Arrow columns (faster, off the GIL) wherever that gives exactly the "
        "Python parser's result; other pages are parsed in Python. Turn off (false) to parse every page in Python.",
        "boolean",
        True,
    ),
    "verify_ssl": ExtraField(
        "Verify TLS certificates",
        "Leave on. Turning it off (false) is logged as a warning on every hook.",
        "boolean",
        True,
    ),
    "export_jobs_path": ExtraField(
        "Export jobs path", "Path that creates Raw Activity Data export jobs.", "string", "/pull/v1/export/activities/jobs"
    ),
    "export_status_path": ExtraField(
        "Export job status path",
        "Path of one export job's status; `{job_id}` is replaced.",
        "string",
        "/pull/v1/export/activities/jobs/{job_id}",
    ),
    "export_data_path": ExtraField(
        "Export job data path",
        "Path of one export job's data; `{job_id}` is replaced.",
        "string",
        "/pull/v1/export/activities/jobs/{job_id}/data",
    ),
}

_LOOPBACK_NAMES = {"localhost"}


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` names this machine's loopback interface (127.0.0.0/8, ::1, localhost)."""
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClientConfig:
    """Validated settings of one People.ai client (sync hook or async trigger client).

    :param conn_id: the Airflow connection id these settings came from (named in errors).
    :param base_url: scheme, host and optional port, without a trailing slash.
    :param client_id: the API key.
    :param client_secret: the API secret; never shown in ``repr``.
    :param token_path: the token endpoint's path, from the extra ``auth_path`` (or its former
        name ``token_path``).
    :param retry_after_max: the longest ``Retry-After`` honoured, in seconds (not an extra:
        :data:`~airflow_provider_activities.api.policy.RETRY_AFTER_MAX`, shorter for a connection test).

    The other fields are the connection extras of :data:`EXTRA_FIELDS`; ``unknown_extras`` names
    extras the connection carries that this provider does not know (logged as a warning).
    """

    conn_id: str
    base_url: str
    client_id: str
    client_secret: str = field(repr=False)
    token_path: str = "/auth/v1/tokens"
    page_size: int | None = None
    requests_per_second: float = 5.0
    max_concurrency: int = 10
    rate_limit_redis_conn_id: str | None = None
    timeout: float = 60.0
    max_retries: int = 8
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    max_response_bytes: int | None = None
    arrow_parsing: bool = True
    verify_ssl: bool = True
    export_jobs_path: str = "/pull/v1/export/activities/jobs"
    export_status_path: str = "/pull/v1/export/activities/jobs/{job_id}"
    export_data_path: str = "/pull/v1/export/activities/jobs/{job_id}/data"
    unknown_extras: tuple[str, ...] = ()
    retry_after_max: float = RETRY_AFTER_MAX

    @classmethod
    def from_connection(
        cls,
        conn_id: str,
        host: str | None,
        login: str | None,
        password: str | None,
        extra: dict[str, Any],
        port: int | None = None,
    ) -> ClientConfig:
        """Build and validate settings from an Airflow connection's fields.

        An extra holding the masked placeholder ``***`` (what Airflow's form shows for a value it
        hides, and stores when saved unchanged) is taken as unset, with a warning naming it. The
        former extra ``token_path`` is read when ``auth_path`` is unset.

        :raises ConnectionSettingsError: (a ``ValueError``) naming the connection and the field,
            for a missing key or secret, a host that is not an http(s) URL or is plain http to a
            non-loopback host, an extra of the wrong type or range, or a path extra that does not
            start with ``/``.
        """
        if not login:
            raise _invalid(f"Connection {conn_id!r} has no API key: set its login (API key / client_id).")
        if not password:
            raise _invalid(
                f"Connection {conn_id!r} has no API secret: set its password (API secret / client_secret)."
            )
        if password.strip() == MASKED_PLACEHOLDER:
            raise _invalid(
                f"Connection {conn_id!r}: its password is the masked placeholder {MASKED_PLACEHOLDER!r}, not a secret "
                "(a form saved the mask). Enter the API secret again."
            )
        unknown = sorted(set(extra) - set(EXTRA_FIELDS) - set(EXTRA_ALIASES))
        values: dict[str, Any] = {}
        for name, spec in EXTRA_FIELDS.items():
            values[name] = _coerce_extra(conn_id, name, _unmasked(conn_id, name, extra.get(name)), spec)
        _read_aliases(conn_id, extra, values)
        _check_ranges(conn_id, values)
        _check_paths(conn_id, values)
        base_url = _base_url(conn_id, host, port)
        values["token_path"] = values.pop("auth_path")
        return cls(
            conn_id=conn_id,
            base_url=base_url,
            client_id=login,
            client_secret=password,
            unknown_extras=tuple(unknown),
            **values,
        )

    def for_connection_test(self) -> ClientConfig:
        """These settings with the short budget of a connection test (the UI's test button, the
        REST API's ``POST /connections/test``, ``airflow connections test``), whose caller waits
        for the answer: :data:`CONNECTION_TEST_TIMEOUT` seconds to connect and per read, at most
        :data:`CONNECTION_TEST_RETRIES` retry per request, and no wait before it longer than
        :data:`CONNECTION_TEST_BACKOFF` seconds (``Retry-After`` included). A closed port, an
        unknown host or rejected credentials then answer within a few seconds; settings already
        shorter are kept.
        """
        return replace(
            self,
            timeout=min(self.timeout, CONNECTION_TEST_TIMEOUT),
            max_retries=min(self.max_retries, CONNECTION_TEST_RETRIES),
            backoff_base=min(self.backoff_base, CONNECTION_TEST_BACKOFF),
            backoff_max=min(self.backoff_max, CONNECTION_TEST_BACKOFF),
            retry_after_max=min(self.retry_after_max, CONNECTION_TEST_BACKOFF),
        )


def _invalid(message: str) -> ConnectionSettingsError:
    """The error for invalid settings (imported here: Airflow, which the errors import, reads this
    module's :data:`EXTRA_FIELDS` while it starts, through ``get_provider_info``).
    """
    from airflow_provider_activities.api.errors import ConnectionSettingsError

    return ConnectionSettingsError(message)


def _unmasked(conn_id: str, name: str, value: Any) -> Any:
    """``value``, or ``None`` (unset) when it is the masked placeholder ``***``, with a warning."""
    if isinstance(value, str) and value.strip() == MASKED_PLACEHOLDER:
        log.warning(
            "Connection %r: extra %r holds the masked placeholder %r (a form that hid its value saved the mask); "
            "it is taken as unset. Set the extra's real value, or remove it for the default.",
            conn_id, name, MASKED_PLACEHOLDER,
        )
        return None
    return value


def _read_aliases(conn_id: str, extra: dict[str, Any], values: dict[str, Any]) -> None:
    """Read the former names of :data:`EXTRA_ALIASES` into ``values`` where the current name is unset.

    :raises ConnectionSettingsError: when both names are set to different values.
    """
    for former, current in EXTRA_ALIASES.items():
        raw = _unmasked(conn_id, former, extra.get(former))
        if raw is None or raw == "":
            continue
        value = _coerce_extra(conn_id, former, raw, EXTRA_FIELDS[current])
        if current in PATH_EXTRAS:
            _check_path(conn_id, former, value)
        given = _unmasked(conn_id, current, extra.get(current))
        if given is None or given == "":
            values[current] = value
        elif values[current] != value:
            raise _invalid(
                f"Connection {conn_id!r}: extras {current!r} ({values[current]!r}) and {former!r} ({value!r}) disagree; "
                f"{former!r} is the former name of {current!r}. Keep {current!r} only."
            )


def _coerce_extra(conn_id: str, name: str, value: Any, spec: ExtraField) -> Any:
    if value is None or value == "":
        return spec.default
    try:
        if spec.json_type == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if spec.json_type == "number":
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if spec.json_type == "boolean":
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in {"true", "1", "yes", "on"}:
                return True
            if str(value).strip().lower() in {"false", "0", "no", "off"}:
                return False
            raise TypeError
        return str(value)
    except (TypeError, ValueError):
        raise _invalid(
            f"Connection {conn_id!r}: extra {name!r} must be a {spec.json_type}, got {value!r}."
        ) from None


def _check_ranges(conn_id: str, values: dict[str, Any]) -> None:
    if values["page_size"] is not None and not 1 <= values["page_size"] <= 100_000:
        raise _invalid(
            f"Connection {conn_id!r}: extra 'page_size' must be 1 to 100000, got {values['page_size']}."
        )
    if values["requests_per_second"] <= 0:
        raise _invalid(f"Connection {conn_id!r}: extra 'requests_per_second' must be above 0.")
    if values["max_concurrency"] < 1:
        raise _invalid(f"Connection {conn_id!r}: extra 'max_concurrency' must be at least 1.")
    if values["timeout"] <= 0:
        raise _invalid(f"Connection {conn_id!r}: extra 'timeout' must be above 0 seconds.")
    if values["max_retries"] < 0:
        raise _invalid(f"Connection {conn_id!r}: extra 'max_retries' must be 0 or more.")
    if values["backoff_base"] < 0 or values["backoff_max"] < 0:
        raise _invalid(
            f"Connection {conn_id!r}: extras 'backoff_base' and 'backoff_max' must be 0 or more."
        )
    if values["max_response_bytes"] is not None and values["max_response_bytes"] < 1024:
        raise _invalid(
            f"Connection {conn_id!r}: extra 'max_response_bytes' must be at least 1024 (bytes), "
            f"got {values['max_response_bytes']}; leave it empty for the default."
        )


def _check_paths(conn_id: str, values: dict[str, Any]) -> None:
    """Each path extra of :data:`PATH_EXTRAS` is a valid path."""
    for name in PATH_EXTRAS:
        _check_path(conn_id, name, values[name])


def _check_path(conn_id: str, name: str, path: str) -> None:
    """``path`` (of the extra ``name``) starts with ``/`` and holds no whitespace; a job path holds ``{job_id}``."""
    if not path.startswith("/") or any(char.isspace() for char in path):
        default = EXTRA_FIELDS[EXTRA_ALIASES.get(name, name)].default
        raise _invalid(
            f"Connection {conn_id!r}: extra {name!r} must be a URL path starting with '/' and without spaces, "
            f"got {path!r}. Leave it empty for the default {default!r}."
        )
    if name in JOB_PATH_EXTRAS and "{job_id}" not in path:
        raise _invalid(
            f"Connection {conn_id!r}: extra {name!r} must hold '{{job_id}}' where the job's id goes, got {path!r}."
        )


def _base_url(conn_id: str, host: str | None, port: int | None) -> str:
    raw = (host or "").strip() or DEFAULT_BASE_URL
    if "://" not in raw:
        raw = f"https://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise _invalid(
            f"Connection {conn_id!r}: host {host!r} is not an http(s) URL such as https://api.people.ai."
        )
    try:
        given_port = parts.port
    except ValueError:
        given_port = -1
    if given_port == -1 or not _valid_hostname(parts.hostname) or parts.query or parts.fragment or " " in parts.path:
        raise _invalid(
            f"Connection {conn_id!r}: host {host!r} is not a valid URL (a host name or IP address, an optional "
            "port from 1 to 65535 and an optional path), such as https://api.people.ai or http://127.0.0.1:8765."
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise _invalid(
            f"Connection {conn_id!r}: plain http is refused for {parts.hostname!r}, because the client secret "
            "would cross the network in clear. Use https://, or http:// only for a loopback host (127.0.0.1)."
        )
    netloc = parts.netloc
    if port and given_port is None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    return f"{parts.scheme}://{netloc}{path}"


def _valid_hostname(hostname: str) -> bool:
    """Whether ``hostname`` (as ``urlsplit`` gives it) is an IP address or a DNS name whose labels
    are letters, digits, hyphens and underscores (any script), 1 to 63 characters each.
    """
    try:
        ipaddress.ip_address(hostname)
        return True
    except ValueError:
        pass
    labels = hostname.rstrip(".").split(".")
    return all(0 < len(label) <= 63 and all(char.isalnum() or char in "-_" for char in label) for label in labels)


class EnvironmentProxies:
    """The proxies the environment gives each origin (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``ALL_PROXY``, ``NO_PROXY``, by the rules of ``requests``), read once per origin.

    Both hooks hold one: the sync hook's session hands :meth:`for_url` to ``requests`` (which
    would otherwise scan the environment on every request), the async hook passes
    :meth:`proxy_url` to ``aiohttp`` (which does not read the environment itself), so both take
    the same route.
    """

    def __init__(self) -> None:
        self._by_origin: dict[str, dict[str, str]] = {}

    def for_url(self, url: str) -> dict[str, str]:
        """The proxies for ``url``'s origin, as ``requests.utils.get_environ_proxies`` gives them."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        proxies = self._by_origin.get(origin)
        if proxies is None:
            from requests.utils import get_environ_proxies

            proxies = self._by_origin[origin] = get_environ_proxies(origin)
        return proxies

    def proxy_url(self, url: str) -> str | None:
        """The one proxy URL for ``url``, or ``None`` for a direct connection; a proxy given
        without a scheme (``proxy.corp:3128``) means ``http://``, as ``requests`` takes it.
        """
        from requests.utils import prepend_scheme_if_needed, select_proxy

        proxy = select_proxy(url, self.for_url(url))
        return prepend_scheme_if_needed(proxy, "http") if proxy else None
