"""Errors the People.ai client raises. None of them ever carries a secret or a token."""

from __future__ import annotations


class PeopleAIError(Exception):
    """Base class of every error this provider raises about the People.ai API.

    A plain ``Exception``: Airflow fails (and retries) a task on any exception, and the API core
    imports nothing beyond the standard library.
    """


class ConnectionSettingsError(ValueError):
    """A ``peopleai`` connection whose settings cannot work (no key, a malformed host, an extra of
    the wrong type, range or form); the message names the connection, the field and the fix.

    The hooks raise it as :class:`~airflow_provider_activities.hooks._common.InvalidConnectionError`,
    an ``AirflowFailException`` too: a task that meets it fails at once, without the task's
    retries, since no retry could succeed before someone edits the connection.
    """


class PeopleAIAPIError(PeopleAIError):
    """A request failed for good: a non-retryable status, or retries ran out.

    :param method: the HTTP method.
    :param path: the URL path (no query string, no credentials).
    :param status: the last HTTP status, or ``None`` after a transport failure.
    :param message: the API's error ``message``, or what went wrong on the wire.
    :param trace_id: the API's error ``id``, logged for the vendor's support; never branched on.
    :param offset: the page offset of a paginated request.
    :param attempts: how many times the request was sent.
    :param permanent: the request cannot succeed as it is, so waiting and sending it again is
        pointless (a 4xx, a refused answer, a malformed URL); ``False`` when retries ran out on a
        failure that may pass (429, 5xx, a refused or dropped connection, a timeout).
    """

    def __init__(
        self,
        method: str,
        path: str,
        status: int | None,
        message: str,
        trace_id: str | None = None,
        offset: int | None = None,
        attempts: int = 1,
        permanent: bool = False,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        self.trace_id = trace_id
        self.offset = offset
        self.attempts = attempts
        self.permanent = permanent
        where = f"{method} {path}" + (f" (offset {offset})" if offset is not None else "")
        status_text = f"HTTP {status}" if status is not None else "no response"
        trace = f" [trace id {trace_id}]" if trace_id else ""
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"People.ai API {where} failed{tries}: {status_text}: {message}{trace}")


class PeopleAIAuthError(PeopleAIError):
    """The token endpoint rejected the connection's credentials (or is unusable).

    :param conn_id: the Airflow connection whose credentials were rejected.
    :param detail: what the API answered (status and message, never the secret).
    """

    def __init__(self, conn_id: str, detail: str) -> None:
        self.conn_id = conn_id
        super().__init__(
            f"People.ai rejected the credentials of connection {conn_id!r} ({detail}). "
            "Check its login (API key) and password (API secret), and that the key is an Activity API key."
        )


class InvalidResponseError(ValueError):
    """A response body that is not the JSON it should be (retried as a transient fault)."""
