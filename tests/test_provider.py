"""Provider registration: the entry point, the `peopleai` connection type and its UI form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from airflow_provider_activities import get_provider_info


def test_entry_point_points_at_provider_info() -> None:
    found = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider_activities")]
    assert len(found) == 1 and found[0].load() is get_provider_info


def test_connection_type_and_form() -> None:
    info = get_provider_info()
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "peopleai"
    assert conn["hook-class-name"] == "airflow_provider_activities.hooks.peopleai.PeopleAIHook"
    behaviour = conn["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"schema", "port"}
    assert behaviour["relabeling"]["login"].startswith("API key")
    fields = conn["conn-fields"]
    # token_path was renamed auth_path (issue 18: the masker hid "token" names in the UI form)
    assert {"auth_path", "page_size", "requests_per_second", "max_concurrency", "timeout", "max_retries"} <= set(fields)
    # page_size: no default, the client learns the largest page the server takes (issue 14; was 1000)
    assert fields["page_size"]["schema"]["default"] is None
    assert all(field["label"] and field["description"] for field in fields.values())
    for module in (m for group in ("hooks", "operators", "sensors", "triggers") for item in info.get(group, []) for m in item["python-modules"]):
        __import__(module)


def test_airflow_sees_the_provider(airflow_home: Path) -> None:
    """`airflow providers list` shows the package (a fresh process, as a user would run it)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "providers", "list", "-o", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "AIRFLOW_HOME": str(airflow_home)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    providers = {p["package_name"]: p for p in json.loads(result.stdout[result.stdout.index("[") :])}
    assert providers["airflow-provider-activities"]["version"] == get_provider_info()["versions"][0]


def test_providers_manager_registers_the_hook_and_fields() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert manager.hooks["peopleai"].hook_class_name.endswith("PeopleAIHook")
    assert "peopleai" in manager.field_behaviours
    assert "extra__peopleai__page_size" in manager.connection_form_widgets
