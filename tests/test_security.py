"""Security suite (issue 8): secrets never leak, TLS verification defaults on, path traversal refused.

``http://`` to a non-loopback host is refused: see ``tests/test_hook.py``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from airflow_provider_activities.hooks.peopleai import PeopleAIHook
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.test_operators import (  # noqa: F401 - fixtures
    DAY,
    START,
    _execute_outside_the_task_runner,
    activities_op,
    connect,
    contents,
    data_requests,
    lake,
    root_of,
    run,
)

CANARY = "SECRET-CANARY-7f3a"


@pytest.fixture
def canary_api(monkeypatch: pytest.MonkeyPatch) -> Any:
    with Sandbox(seed=7, activities=400, start=START, days=2, rate_limit=None, client_secret=CANARY) as sb:
        connect(monkeypatch, sb)
        yield sb


def test_no_secret_or_token_in_logs_xcom_manifests_templates_or_errors(
    canary_api: Sandbox, tmp_path: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    output = lake(tmp_path)
    seen: list[str] = []
    # success with faults: retries, token expiry, invalid JSON
    canary_api.faults.fail_next(2, 503)
    canary_api.faults.invalid_json(1)
    op = activities_op(output)
    seen.append(json.dumps(run(op, START, START + 2 * DAY), default=str))
    seen.extend(repr(getattr(op, f)) for f in op.template_fields)
    # failures: token endpoint down, 401 everywhere
    canary_api.faults.reset()
    canary_api.revoke_tokens()
    canary_api.faults.token_endpoint_down(10_000)
    with pytest.raises(Exception) as info:
        run(activities_op(output), START, START + DAY)
    seen.append(repr(info.value) + str(info.value) + repr(info.value.__cause__) + repr(info.value.__context__))
    for data in contents(root_of(output)).values():
        seen.append(data.decode("utf-8", "replace"))
    captured = capsys.readouterr()
    seen += [captured.out, captured.err, caplog.text]
    seen += [repr(r.args) + r.getMessage() for r in caplog.records]
    tokens = list(canary_api.token_uses())
    assert tokens, "the sandbox issued tokens"
    blob = "\n".join(seen)
    assert CANARY not in blob
    for token in tokens:
        assert token not in blob


def test_tls_verification_is_on_by_default(canary_api: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = PeopleAIHook()
    assert hook.config.verify_ssl is True
    assert hook.get_conn().verify is True


def test_turning_tls_verification_off_warns(
    canary_api: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    connect(monkeypatch, canary_api, verify_ssl=False)
    caplog.set_level(logging.WARNING)
    hook = PeopleAIHook()
    assert hook.get_conn().verify is False
    captured = capsys.readouterr()
    assert "verify_ssl=false" in caplog.text + captured.out + captured.err  # the task logger is structlog


@pytest.mark.parametrize("template", ["{{ params.root }}/../escape", "{{ params.root }}/a/./b"])
def test_a_templated_output_path_with_dot_segments_is_refused_before_any_call(
    canary_api: Sandbox, tmp_path: Any, template: str
) -> None:
    canary_api.reset_log()
    op = activities_op(template)
    with pytest.raises(ValueError, match="output_path"):
        run(op, START, params={"root": lake(tmp_path)})
    assert data_requests(canary_api) == []
    assert not (tmp_path / "escape").exists() and not (tmp_path / "lake").exists()
