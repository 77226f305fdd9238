"""The life of one API call, written once for both transports (a "sans-I/O" generator).

A call flow is a generator that yields what it needs done and receives the outcome:

* :class:`Pace` - take a slot of the rate limiter, waiting as long as it says; the driver
  answers ``None``. It comes after the token is taken (minting a token needs a slot of its own);
* :class:`Send` - send this request now and give the slot back once answered; the driver answers
  with a :class:`Response`, or with the exception the transport raised (connection refused or
  dropped, timeout);
* :class:`Sleep` - wait this many seconds; the driver answers ``None``;
* :class:`NeedToken` - give me a valid access token; the driver answers with the token
  (minting it, under its lock, by running :func:`token_flow`); ``fresh=True`` asks for a new
  one after a 401.

The flow returns the parsed result or raises the final error. The sync hook drives it with
``requests`` and ``time.sleep``; the async client with ``aiohttp`` and ``asyncio.sleep``.
Retry rules, backoff, re-authentication and error messages therefore live here only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_provider_activities.api.config import ClientConfig
from airflow_provider_activities.api.errors import InvalidResponseError, PeopleAIAPIError, PeopleAIAuthError
from airflow_provider_activities.api.policy import RetryPolicy, TokenCache
from airflow_provider_activities.api.protocol import (
    ApiRequest,
    RefusedResponseError,
    Token,
    parse_error,
    parse_token,
    token_request,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Statuses that carry a ``Location`` to follow, for flows that ask for redirects (``on_redirect``).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Send:
    """Ask the driver to send ``request``."""

    request: ApiRequest


@dataclass(frozen=True)
class Pace:
    """Ask the driver for a rate-limiter slot (the next :class:`Send` gives it back)."""


@dataclass(frozen=True)
class Sleep:
    """Ask the driver to wait ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class NeedToken:
    """Ask the driver for an access token; ``stale`` is the one a 401 just rejected."""

    stale: str | None = None


@dataclass(frozen=True)
class Response:
    """What the transport received.

    :param status: the HTTP status.
    :param headers: the response headers.
    :param body: the whole body.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


Action = Pace | Send | Sleep | NeedToken
Flow = Generator[Action, Any, T]


def call_flow(
    request: ApiRequest,
    parse: Callable[[bytes], T],
    policy: RetryPolicy,
    on_redirect: Callable[[Response], T] | None = None,
) -> Flow[T]:
    """Send ``request`` until it succeeds and ``parse`` accepts the body, or fails for good.

    Retried (up to ``policy.max_retries`` times, with backoff, each retry logged as a warning):
    429, 500, 502, 503, 504, transport errors that may pass (a refused or dropped connection, a
    timeout, a host name that did not resolve: :meth:`RetryPolicy.retryable_error`), and bodies
    ``parse`` rejects as invalid (:class:`InvalidResponseError`, e.g. cut short). A 401 on an
    authenticated request gets one fresh token and one more try, outside the retry budget.
    Anything else raises :class:`PeopleAIAPIError` naming method, path, offset, status, and the
    API's message and trace id; its ``permanent`` is true when no retry could help.

    Refused at once, not retried (:class:`PeopleAIAPIError` whose message starts with ``answer
    refused``): a 2xx body over :meth:`ApiRequest.body_cap` (the server ignored ``limit``, or
    something else is wrong: the same request would get the same answer), and a body ``parse``
    refuses (:class:`~airflow_provider_activities.api.protocol.RefusedResponseError`: nested too
    deep, wrong shape or types). Failed at once too (message ``not retried: ...``): a transport
    error the request would meet again, such as a malformed URL.

    :param on_redirect: when given, a 301/302/303/307/308 answer returns ``on_redirect(response)``
        instead of failing (the export download follows redirects itself, see
        :func:`airflow_provider_activities.api.export.download_flow`); ``None`` keeps the default.
    """
    attempts = 0
    reauthenticated = False
    token: str | None = None
    while True:
        if request.authenticated:
            token = yield NeedToken()
            yield Pace()
            outcome = yield Send(request.with_bearer(token))
        else:
            yield Pace()
            outcome = yield Send(request)
        attempts += 1
        headers: Mapping[str, str] | None = None
        if isinstance(outcome, BaseException):
            problem, status, trace_id = f"{type(outcome).__name__}: {outcome}", None, None
            if not policy.retryable_error(outcome):
                raise _api_error(request, None, f"not retried: {problem}", None, attempts, permanent=True)
        elif outcome.status == 401 and request.authenticated and not reauthenticated:
            reauthenticated = True
            log.info("People.ai answered 401 to %s %s; minting a new token and retrying once.", request.method, request.path)
            yield NeedToken(stale=token)
            continue
        elif 200 <= outcome.status < 300:
            cap = request.body_cap()
            if len(outcome.body) > cap:
                raise _api_error(
                    request,
                    outcome.status,
                    f"answer refused: its body ({len(outcome.body):,} bytes read) is over the cap of {cap:,} bytes "
                    f"({_asked(request)}the cap is the connection extra 'max_response_bytes')",
                    None,
                    attempts,
                    permanent=True,
                )
            try:
                return parse(outcome.body)
            except RefusedResponseError as err:
                raise _api_error(request, outcome.status, f"answer refused: {err}", None, attempts, permanent=True) from None
            except InvalidResponseError as err:
                problem, status, trace_id = f"{err}{_content_type_note(outcome.headers)}", outcome.status, None
        elif on_redirect is not None and outcome.status in REDIRECT_STATUSES:
            return on_redirect(outcome)
        else:
            if len(outcome.body) > request.body_cap():
                message, trace_id = f"error body of {len(outcome.body):,} bytes, over the cap: not read", None
            else:
                message, trace_id = parse_error(outcome.body)
            status, headers = outcome.status, outcome.headers
            if not policy.retryable_status(status):
                raise _api_error(request, status, message, trace_id, attempts, permanent=True)
            problem = message
        if attempts > policy.max_retries:
            raise _api_error(request, status, problem, trace_id, attempts)
        delay = policy.delay(attempts, headers)
        log.warning(
            "People.ai %s %s%s: %s%s; retry %d of %d in %.1f s.",
            request.method,
            request.path,
            f" (offset {request.offset})" if request.offset is not None else "",
            f"HTTP {status}: " if status is not None else "",
            problem,
            attempts,
            policy.max_retries,
            delay,
        )
        yield Sleep(delay)


def token_flow(config: ClientConfig, policy: RetryPolicy) -> Flow[Token]:
    """Mint an access token with the client-credentials grant.

    Transient failures are retried like any call; a 400 or 401 (rejected credentials) raises
    :class:`PeopleAIAuthError` naming the connection id, never the secret.
    """
    try:
        return (yield from call_flow(token_request(config), parse_token, policy))
    except PeopleAIAPIError as err:
        if err.status in (400, 401, 403):
            raise PeopleAIAuthError(config.conn_id, f"HTTP {err.status}: {err.message}") from None
        raise


def obtain_token(
    tokens: TokenCache,
    need: NeedToken,
    config: ClientConfig,
    policy: RetryPolicy,
    clock: Callable[[], float],
    on_mint: Callable[[str], None],
) -> Flow[str]:
    """A valid access token for ``need``: the cached one, or a new one minted by :func:`token_flow`.

    The sync and async drivers run it under their own lock, so concurrent callers mint one token.

    :param tokens: the process's cache for these credentials.
    :param need: what the call flow asked for (``stale`` is the token a 401 just rejected).
    :param clock: monotonic seconds.
    :param on_mint: called with each new token before it is used (the hooks register it with
        Airflow's secrets masker).
    """
    if need.stale is not None:
        tokens.invalidate(need.stale)
    token = tokens.get(clock())
    if token is None:
        asked_at = clock()
        minted = yield from token_flow(config, policy)
        on_mint(minted.access_token)
        tokens.store(minted.access_token, minted.expires_in, asked_at)
        token = minted.access_token
    return token


def _content_type_note(headers: Mapping[str, str]) -> str:
    """``" (Content-Type text/html)"`` when the answer did not even claim to be JSON, else ``""``."""
    for name, value in (headers or {}).items():
        if name.lower() == "content-type":
            kind = value.split(";")[0].strip()
            return "" if "json" in kind.lower() else f" (Content-Type {kind[:80]})"
    return ""


def _asked(request: ApiRequest) -> str:
    """``"asked for limit=100 records; "`` for a page request, else ``""``."""
    limit = request.params.get("limit")
    return f"asked for limit={limit} records; " if limit is not None else ""


def _api_error(
    request: ApiRequest,
    status: int | None,
    message: str,
    trace_id: str | None,
    attempts: int,
    permanent: bool = False,
) -> PeopleAIAPIError:
    return PeopleAIAPIError(
        method=request.method,
        path=request.path,
        status=status,
        message=message,
        trace_id=trace_id,
        offset=request.offset,
        attempts=attempts,
        permanent=permanent,
    )
