"""Every Airflow import of the provider, in one place.

The rest of the package imports Airflow names from here only, so that support for
another Airflow line means changing this module alone. Targets Airflow 3 (Task SDK).
"""

from __future__ import annotations

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
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout, AirflowSkipException
from airflow.sdk.log import mask_secret
from airflow.triggers.base import BaseTrigger, TriggerEvent

__all__ = [
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
    "TriggerEvent",
    "conf",
    "mask_secret",
]
