"""What the sync and async hooks share beyond the sans-I/O core: reading the connection, and the
rate budget shared through Redis when the connection names one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airflow_provider_activities.api.config import ClientConfig
from airflow_provider_activities.api.errors import ConnectionSettingsError
from airflow_provider_activities.api.pagination import Logger
from airflow_provider_activities.compat import AirflowFailException, mask_secret

if TYPE_CHECKING:
    from airflow_provider_activities.hooks._shared_budget import SharedBudget

SHARED_BUDGET_MODULE = "airflow_provider_activities.hooks._shared_budget"
"""The module of the Redis rate budget; it needs the ``redis`` package, so it is imported only
when a connection sets ``rate_limit_redis_conn_id``.
"""

REDIS_INSTALL = "pip install 'airflow-provider-activities[redis]'"
"""What installs the ``redis`` package the shared rate budget needs."""


class InvalidConnectionError(ConnectionSettingsError, AirflowFailException):
    """:class:`~airflow_provider_activities.api.errors.ConnectionSettingsError` as the hooks raise it:
    also an ``AirflowFailException``, so the task fails at once, without its retries (none could
    succeed before someone edits the connection).
    """


def client_config(conn_id: str, conn: Any, log: Logger) -> ClientConfig:
    """Validated settings from an Airflow ``Connection``, with the warnings its settings deserve.

    The password is registered with Airflow's secrets masker first, so it never shows in a log
    line, whatever goes wrong next.

    :param conn_id: the connection's id (named in errors and warnings).
    :param conn: the Airflow ``Connection``.
    :param log: the hook's logger.
    :raises ValueError: for a connection without key or secret, or with a bad extra.
    :raises ImportError: when the connection sets ``rate_limit_redis_conn_id`` and the ``redis``
        package is missing (see :func:`require_shared_budget`).
    """
    if conn.password:
        mask_secret(conn.password)
    try:
        config = ClientConfig.from_connection(
            conn_id=conn_id,
            host=conn.host,
            login=conn.login,
            password=conn.password,
            extra=conn.extra_dejson,
            port=conn.port,
        )
    except ConnectionSettingsError as err:
        raise InvalidConnectionError(str(err)) from None
    if config.unknown_extras:
        log.warning("Connection %r has extras this provider ignores: %s", conn_id, ", ".join(config.unknown_extras))
    if not config.verify_ssl:
        log.warning("Connection %r turns TLS certificate verification off (verify_ssl=false).", conn_id)
    if config.rate_limit_redis_conn_id is not None:
        require_shared_budget(config)
    return config


def require_shared_budget(config: ClientConfig) -> None:
    """Import the Redis rate budget, or fail at once saying what to install.

    Called when the connection is read, so a missing package fails the task before any request.

    :param config: settings whose ``rate_limit_redis_conn_id`` is set.
    :raises ImportError: naming the connection, the extra and ``pip install
        'airflow-provider-activities[redis]'``, when the ``redis`` package cannot be imported.
    """
    try:
        importlib.import_module(SHARED_BUDGET_MODULE)
    except ImportError as err:
        raise ImportError(
            f"Connection {config.conn_id!r} sets the extra 'rate_limit_redis_conn_id' "
            f"({config.rate_limit_redis_conn_id!r}), which shares the rate budget through Redis and needs the "
            f"redis package ({err}). Install it with: {REDIS_INSTALL}; or remove the extra, and each process "
            "paces on its own."
        ) from None


def redis_budget(config: ClientConfig, redis_connection: Any) -> SharedBudget:
    """The process's rate budget for ``config``'s API key, shared through the Redis of ``redis_connection``.

    Its numbers are the connection's ``requests_per_second`` and ``max_concurrency``; a slot's
    lease is :func:`~airflow_provider_activities.hooks._shared_budget.lease_for_timeout` of its
    ``timeout``. The Redis password is registered with Airflow's secrets masker here.

    :param config: settings whose ``rate_limit_redis_conn_id`` is set.
    :param redis_connection: the Airflow connection it names (``get_connection`` in a worker,
        ``aget_connection`` in the triggerer).
    :raises ValueError: for a connection that is not of type ``redis``, or a bad ``db`` or TLS
        extra, naming the connection and the extra.
    """
    from airflow_provider_activities.hooks._shared_budget import lease_for_timeout, redis_settings, shared_budget

    return shared_budget(
        redis_settings(redis_connection),
        config.base_url,
        config.client_id,
        config.requests_per_second,
        config.max_concurrency,
        lease_for_timeout(config.timeout),
    )
