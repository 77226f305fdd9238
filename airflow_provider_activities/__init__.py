"""Apache Airflow provider for People.ai (Backstory) activity data.

The provider registers itself with Airflow through the ``apache_airflow_provider``
entry point, which points at :func:`get_provider_info`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

CONN_TYPE = "peopleai"
DEFAULT_CONN_ID = "peopleai_default"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (``airflow providers list``)."""
    return {
        "package-name": "airflow-provider-activities",
        "name": "People.ai Activities",
        "description": "Extract People.ai (Backstory) activities, participants and raw exports into Parquet.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "People.ai",
                "external-doc-url": "https://api.people.ai",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "People.ai",
                "python-modules": [
                    "airflow_provider_activities.hooks.peopleai",
                    "airflow_provider_activities.hooks.peopleai_async",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": "People.ai",
                "python-modules": ["airflow_provider_activities.operators.peopleai"],
            }
        ],
        "sensors": [
            {
                "integration-name": "People.ai",
                "python-modules": ["airflow_provider_activities.sensors.peopleai"],
            }
        ],
        "triggers": [
            {
                "integration-name": "People.ai",
                "python-modules": ["airflow_provider_activities.triggers.peopleai"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_activities.hooks.peopleai.PeopleAIHook",
                "hook-name": "People.ai",
                "connection-type": CONN_TYPE,
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {
                        "login": "API key (client_id)",
                        "password": "API secret (client_secret)",
                        "host": "Base URL",
                    },
                    "placeholders": {
                        "login": "People.ai Activity API key",
                        "password": "People.ai Activity API secret",
                        "host": "https://api.people.ai",
                    },
                },
                "conn-fields": _conn_fields(),
            }
        ],
    }


def _conn_fields() -> dict[str, Any]:
    from airflow_provider_activities.api.config import EXTRA_FIELDS

    return {
        name: {
            "label": field.label,
            "description": field.description,
            "schema": {"type": [field.json_type, "null"], "default": field.default},
        }
        for name, field in EXTRA_FIELDS.items()
    }
