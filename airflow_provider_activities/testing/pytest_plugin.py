"""pytest fixtures that run the People.ai sandbox API for a test.

Enable them in a ``conftest.py``::

    pytest_plugins = ["airflow_provider_activities.testing.pytest_plugin"]

Fixtures:

* ``peopleai_sandbox``: a started :class:`~airflow_provider_activities.testing.sandbox.Sandbox`
  with default settings except ``rate_limit=None`` (fast). Change its settings per test with
  ``@pytest.mark.peopleai_sandbox(activities=500, rate_limit=5.0)`` or by indirect
  parametrisation (``@pytest.mark.parametrize("peopleai_sandbox", [{"seed": 3}], indirect=True)``).
* ``peopleai_sandbox_factory``: a callable ``make(**kwargs) -> Sandbox`` for several sandboxes
  (also ``rate_limit=None`` unless given); every sandbox it made is stopped at teardown.
* ``peopleai_connection``: the ``peopleai_sandbox``, with ``AIRFLOW_CONN_PEOPLEAI_DEFAULT``
  pointing at it for the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_activities.testing.sandbox import Sandbox

FAST_DEFAULTS: dict[str, Any] = {"rate_limit": None}
"""Settings the fixtures use unless a test overrides them."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``peopleai_sandbox`` marker.

    :param config: pytest's configuration.
    """
    config.addinivalue_line(
        "markers",
        "peopleai_sandbox(**kwargs): Sandbox settings for the peopleai_sandbox / peopleai_connection fixtures",
    )


@pytest.fixture
def peopleai_sandbox_factory() -> Iterator[Callable[..., Sandbox]]:
    """A callable making started sandboxes: ``make(**kwargs)`` takes :class:`Sandbox`'s arguments
    (``rate_limit`` defaults to ``None``); all of them are stopped when the test ends.
    """
    made: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        settings = {**FAST_DEFAULTS, **kwargs}
        sandbox = Sandbox(**settings).start()
        made.append(sandbox)
        return sandbox

    yield make
    for sandbox in made:
        sandbox.stop()


@pytest.fixture
def peopleai_sandbox(request: pytest.FixtureRequest, peopleai_sandbox_factory: Callable[..., Sandbox]) -> Sandbox:
    """A started sandbox for one test (settings from the ``peopleai_sandbox`` marker or an
    indirect parameter, else defaults with ``rate_limit=None``); stopped after the test.

    :param request: the requesting test (its marker and parameter).
    :param peopleai_sandbox_factory: makes the sandbox.
    """
    settings: dict[str, Any] = {}
    marker = request.node.get_closest_marker("peopleai_sandbox")
    if marker is not None:
        settings.update(marker.kwargs)
    param = getattr(request, "param", None)
    if param is not None:
        if not isinstance(param, dict):
            raise TypeError(f"an indirect peopleai_sandbox parameter must be a dict of Sandbox arguments, got {param!r}")
        settings.update(param)
    return peopleai_sandbox_factory(**settings)


@pytest.fixture
def peopleai_connection(peopleai_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The ``peopleai_sandbox`` with ``AIRFLOW_CONN_PEOPLEAI_DEFAULT`` set to its connection JSON.

    :param peopleai_sandbox: the sandbox.
    :param monkeypatch: sets the variable for the test only.
    """
    monkeypatch.setenv("AIRFLOW_CONN_PEOPLEAI_DEFAULT", peopleai_sandbox.connection_json())
    yield peopleai_sandbox
