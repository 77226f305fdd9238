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
``ObjectStoragePath``       ``airflow.io.path``         ``airflow.sdk``       ``airflow.sdk``
``Asset``, ``AssetAlias``   ``Dataset``,                ``airflow.sdk``       ``airflow.sdk``
                            ``DatasetAlias``
``Context``                 ``airflow.utils.context``   ``airflow.sdk``       ``airflow.sdk``
exceptions                  ``airflow.exceptions``      ``airflow.exceptions`` ``airflow.sdk.exceptions``
``conf``                    ``airflow.configuration``   as 2.11               ``airflow.sdk.configuration``
``mask_secret``             ``airflow.utils.log``       ``airflow.sdk.log``   ``airflow.sdk.log``
``BaseTrigger``, ...        ``airflow.triggers.base``   as 2.11               as 2.11
==========================  ==========================  ====================  ======================

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
            ObjectStoragePath,
            PokeReturnValue,
        )
        from airflow.sdk.definitions.context import Context
        from airflow.sdk.log import mask_secret
    else:
        from airflow.datasets import Dataset, DatasetAlias
        from airflow.io.path import ObjectStoragePath
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
    "conf",
    "get_base_airflow_version_tuple",
    "mask_secret",
]
