"""Every Airflow import of the provider, in one place, for Airflow 2.11 and 3.x.

The rest of the package imports Airflow names from here only, so that each difference between
Airflow lines lives in this module. The names follow those of the official providers'
``airflow.providers.common.compat.sdk`` module (``Asset`` rather than ``Dataset``, and so on), and
the version flags are computed as in the official providers' ``version_compat.py``.

Where each name comes from:

==========================  ==========================  ====================  ======================
name                        2.11                        3.0 and 3.1           3.2 and later
==========================  ==========================  ====================  ======================
``BaseHook``                ``airflow.hooks.base``      3.0: as 2.11;         ``airflow.sdk``
                                                        3.1: ``airflow.sdk``
``BaseOperator``, ...       ``airflow.models``,         ``airflow.sdk``       ``airflow.sdk``
                            ``airflow.sensors.base``
``ObjectStoragePath``       ``airflow.io.path`` (¹)     ``airflow.sdk`` (¹)   ``airflow.sdk``
``Asset``, ``AssetAlias``   ``Dataset``,                ``airflow.sdk``       ``airflow.sdk``
                            ``DatasetAlias``
``Context``                 ``airflow.utils.context``   ``airflow.sdk``       ``airflow.sdk``
exceptions                  ``airflow.exceptions``      ``airflow.exceptions`` ``airflow.sdk.exceptions``
``conf``                    ``airflow.configuration``   as 2.11               ``airflow.sdk.configuration``
``mask_secret``             ``airflow.utils.log``       ``airflow.sdk.log``   ``airflow.sdk.log``
``BaseTrigger``, ...        ``airflow.triggers.base``   as 2.11               as 2.11
==========================  ==========================  ====================  ======================

(¹) with the ``conn_id`` property Airflow 3.2 added.

On 2.11, :class:`Asset` is a :class:`airflow.datasets.Dataset` that also takes the ``name`` an
Airflow 3 ``Asset`` has (kept on the object, unknown to Airflow 2), so that one call builds the
outlet on both lines. Type checkers see the newest Airflow's names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


def get_base_airflow_version_tuple() -> tuple[int, int, int]:
    """The installed Airflow's (major, minor, micro), without pre-release or local parts."""
    from airflow import __version__
    from packaging.version import Version

    airflow_version = Version(__version__)
    return airflow_version.major, airflow_version.minor, airflow_version.micro


AIRFLOW_V_3_0_PLUS: bool = get_base_airflow_version_tuple() >= (3, 0, 0)
"""Airflow 3: the Task SDK (``airflow.sdk``), Assets, no direct metadata-database access in tasks."""
AIRFLOW_V_3_1_PLUS: bool = get_base_airflow_version_tuple() >= (3, 1, 0)
"""Airflow 3.1 and later: ``BaseHook`` is the Task SDK's."""
AIRFLOW_V_3_2_PLUS: bool = get_base_airflow_version_tuple() >= (3, 2, 0)
"""Airflow 3.2 and later: exceptions and ``conf`` come from the Task SDK."""
AIRFLOW_V_3_3_PLUS: bool = get_base_airflow_version_tuple() >= (3, 3, 0)
"""Airflow 3.3 and later: a task's context has ``task_state_store``, kept across its tries."""

if TYPE_CHECKING:
    from airflow.sdk import (
        Asset,
        AssetAlias,
        BaseHook,
        BaseOperator,
        BaseSensorOperator,
        Connection,
        ObjectStoragePath,
        PokeReturnValue,
    )
    from airflow.sdk.configuration import conf
    from airflow.sdk.definitions.context import Context
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
    from airflow.sdk.log import mask_secret
    from airflow.triggers.base import BaseTrigger, TriggerEvent
else:
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import (
            Asset,
            AssetAlias,
            BaseOperator,
            BaseSensorOperator,
            Connection,
            PokeReturnValue,
        )
        from airflow.sdk import ObjectStoragePath as _ObjectStoragePath
        from airflow.sdk.definitions.context import Context
        from airflow.sdk.log import mask_secret
    else:
        from airflow.datasets import Dataset, DatasetAlias
        from airflow.io.path import ObjectStoragePath as _ObjectStoragePath
        from airflow.models.baseoperator import BaseOperator
        from airflow.models.connection import Connection
        from airflow.sensors.base import BaseSensorOperator, PokeReturnValue
        from airflow.utils.context import Context
        from airflow.utils.log.secrets_masker import mask_secret

        AssetAlias = DatasetAlias

        class Asset(Dataset):
            """Airflow 2's ``Dataset``, built as Airflow 3's ``Asset`` is: ``Asset(uri=..., name=...)``.

            Airflow 2 knows datasets by URI alone: ``name`` (the URI when not given) stays on the
            object for the provider's own use; equality, hashing and serialization are the
            ``Dataset``'s, by URI.

            :param uri: the dataset's URI.
            :param name: the Airflow 3 asset name.
            :param extra: the dataset's extra (not an event's extra).
            """

            def __init__(self, uri: str, name: str | None = None, extra: dict[str, Any] | None = None) -> None:
                super().__init__(uri=uri, extra=extra)
                self.name = name or uri

    if AIRFLOW_V_3_2_PLUS:
        ObjectStoragePath = _ObjectStoragePath
    else:

        class ObjectStoragePath(_ObjectStoragePath):
            """``ObjectStoragePath`` with the ``conn_id`` property it has from Airflow 3.2 on (before,
            the connection id is in ``storage_options`` only).
            """

            __slots__ = ()

            @property
            def conn_id(self) -> str | None:
                """The Airflow connection the path's filesystem is built from (``None``: default credentials)."""
                return self.storage_options.get("conn_id")

    if AIRFLOW_V_3_1_PLUS:
        from airflow.sdk import BaseHook
    else:
        from airflow.hooks.base import BaseHook

    if AIRFLOW_V_3_2_PLUS:
        from airflow.sdk.configuration import conf
        from airflow.sdk.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
            TaskDeferred,
        )
    else:
        from airflow.configuration import conf
        from airflow.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
            TaskDeferred,
        )


def alias_event_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` made fit for an asset alias event (``outlet_events[alias].add(asset, extra=...)``).

    Airflow 2.11 groups a task's alias events by their extra made into a ``frozenset`` of its
    items, so every value must be hashable: lists become tuples there (stored as JSON lists all
    the same). Airflow 3 takes the extra as it is.

    :param extra: the event's extra (JSON values).
    """
    if AIRFLOW_V_3_0_PLUS:
        return extra
    return {key: _hashable(value) for key, value in extra.items()}


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    return value


async def get_async_connection(hook: BaseHook, conn_id: str) -> Connection:
    """The connection ``conn_id``, read from a coroutine (a trigger, in the triggerer).

    Where ``Connection`` masks its secrets without blocking (Airflow 3.3.2 and later, recognised by
    ``Connection.aextra_dejson``), this awaits ``hook.aget_connection``. Elsewhere the hook's
    synchronous ``get_connection`` runs in a worker thread: Airflow 2.11 and 3.0 have no
    ``aget_connection``, and before 3.3.2 it masks secrets with a blocking call to the supervisor
    that can deadlock the event loop. This is what the official providers' ``common.compat``
    ``get_async_connection`` does.

    :param hook: the hook reading it (its own ``get_connection`` or ``aget_connection`` is used).
    :param conn_id: the connection id.
    """
    if hasattr(Connection, "aextra_dejson"):
        return await hook.aget_connection(conn_id)
    from asgiref.sync import sync_to_async

    return await sync_to_async(hook.get_connection)(conn_id)


def ui_field_behaviour(behaviour: dict[str, Any]) -> dict[str, Any]:
    """A hook's ``get_ui_field_behaviour()`` from the provider info's ``ui-field-behaviour``.

    Airflow 3.2 and later read the connection form from ``get_provider_info()``
    (``ui-field-behaviour``, ``conn-fields``); Airflow 2.11, 3.0 and 3.1 ask the hook class, with
    snake-case keys. One declaration serves both.

    :param behaviour: the ``ui-field-behaviour`` of the provider info (``hidden-fields``,
        ``relabeling``, ``placeholders``).
    """
    return {
        "hidden_fields": list(behaviour.get("hidden-fields", [])),
        "relabeling": dict(behaviour.get("relabeling", {})),
        "placeholders": dict(behaviour.get("placeholders", {})),
    }


def connection_form_widgets(conn_fields: dict[str, Any]) -> dict[str, Any]:
    """A hook's ``get_connection_form_widgets()`` from the provider info's ``conn-fields``.

    For Airflow 2.11, 3.0 and 3.1, which build the connection form's extra fields from the hook
    class (3.2 and later read ``conn-fields`` from the provider info). Each field becomes a
    WTForms field as the 2.x providers declare them: a JSON ``boolean`` a check box, an
    ``integer`` an integer field, anything else a text field (a ``number`` is read back from its
    text). Flask-AppBuilder and WTForms come with Airflow 2's web server; Airflow skips the
    widgets when they are not installed.

    :param conn_fields: the ``conn-fields`` of the provider info: by extra name, its ``label``,
        ``description`` and JSON ``schema`` (``type``, ``default``).
    """
    # Airflow 2's web server dependencies, untyped (not installed beside Airflow 3 by default)
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget  # type: ignore[import-not-found]
    from flask_babel import lazy_gettext  # type: ignore[import-not-found]
    from wtforms import BooleanField, IntegerField, StringField  # type: ignore[import-untyped]
    from wtforms.validators import Optional  # type: ignore[import-untyped]

    widgets: dict[str, Any] = {}
    for name, field in conn_fields.items():
        schema = field.get("schema", {})
        types = schema.get("type", "string")
        types = set(types) if isinstance(types, list) else {types}
        label, description, default = lazy_gettext(field["label"]), field.get("description"), schema.get("default")
        if "boolean" in types:
            widgets[name] = BooleanField(label, description=description, default=default)
        elif "integer" in types:
            widgets[name] = IntegerField(
                label, widget=BS3TextFieldWidget(), validators=[Optional()], description=description, default=default
            )
        else:
            widgets[name] = StringField(
                label,
                widget=BS3TextFieldWidget(),
                description=description,
                default=None if default is None else str(default),
            )
    return widgets


__all__ = [
    "AIRFLOW_V_3_0_PLUS",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "Asset",
    "AssetAlias",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Connection",
    "Context",
    "ObjectStoragePath",
    "PokeReturnValue",
    "TaskDeferred",
    "TriggerEvent",
    "alias_event_extra",
    "conf",
    "connection_form_widgets",
    "get_async_connection",
    "get_base_airflow_version_tuple",
    "mask_secret",
    "ui_field_behaviour",
]
