"""What the sync and async hooks share beyond the sans-I/O core: reading the connection."""

from __future__ import annotations

from typing import Any

from airflow_provider_activities.api.config import ClientConfig
from airflow_provider_activities.api.pagination import Logger
from airflow_provider_activities.compat import mask_secret


def client_config(conn_id: str, conn: Any, log: Logger) -> ClientConfig:
    """Validated settings from an Airflow ``Connection``, with the warnings its settings deserve.

    The password is registered with Airflow's secrets masker first, so it never shows in a log
    line, whatever goes wrong next.

    :param conn_id: the connection's id (named in errors and warnings).
    :param conn: the Airflow ``Connection``.
    :param log: the hook's logger.
    :raises ValueError: for a connection without key or secret, or with a bad extra.
    """
    if conn.password:
        mask_secret(conn.password)
    config = ClientConfig.from_connection(
        conn_id=conn_id,
        host=conn.host,
        login=conn.login,
        password=conn.password,
        extra=conn.extra_dejson,
        port=conn.port,
    )
    if config.unknown_extras:
        log.warning("Connection %r has extras this provider ignores: %s", conn_id, ", ".join(config.unknown_extras))
    if not config.verify_ssl:
        log.warning("Connection %r turns TLS certificate verification off (verify_ssl=false).", conn_id)
    return config
