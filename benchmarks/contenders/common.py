"""What every contender shares: its spec, the token request, the result line."""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

ACTIVITIES_PATH = "/v0/public/activities"
TOKEN_PATH = "/auth/v1/tokens"
RESULT_PREFIX = "BENCH_RESULT "


@dataclass
class Spec:
    """What one contender run extracts, and where to.

    :param base_url: the sandbox's ``http://127.0.0.1:<port>``.
    :param client_id: the API key.
    :param client_secret: the API secret.
    :param day: the interval, one UTC day ``YYYY-MM-DD`` holding every record.
    :param page_size: records per page (the ``limit``).
    :param concurrency: requests in flight at once (provider's ``max_concurrency``; transport's threads).
    :param requests_per_second: the client-side rate (provider extra; transport's pacing); ``None``: no pacing.
    :param out_dir: an empty directory the contender may write to.
    :param expected: records in the interval (for the contender's own sanity, not enforced here).
    :param options: contender switches: the transport's ``parser`` (``json`` or ``arrow``, set by the
        runner per contender), ``parse`` (``false``: bytes only, the runner's sandbox warm-up) and
        the provider's ``connection_defaults`` (``true``: a connection without extras; ``page_size``,
        ``concurrency`` and ``requests_per_second`` are then not given to it).
    """

    base_url: str
    client_id: str
    client_secret: str
    day: str
    page_size: int
    concurrency: int
    requests_per_second: float | None
    out_dir: str
    expected: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_argv(cls) -> Spec:
        return cls(**json.loads(sys.argv[1]))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @property
    def filters(self) -> dict[str, str]:
        """The day filters the provider sends for a one-day interval (so every client asks the same pages)."""
        return {"from": self.day, "to": self.day}


def fetch_token(session: Any, spec: Spec) -> str:
    """A bearer token from the client-credentials grant (form-encoded, as the vendor requires)."""
    answer = session.post(
        spec.base_url + TOKEN_PATH,
        data={"grant_type": "client_credentials", "client_id": spec.client_id, "client_secret": spec.client_secret},
        timeout=60,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) and of its reaped children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Clock:
    """Times the extraction: ``start()`` after imports, ``stop()`` after the last byte written.

    Wall seconds and CPU seconds (every thread of the process): the CPU time depends less than the
    wall time on what else the machine runs meanwhile (it still grows with contention).
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0
        self.cpu_started = 0.0
        self.cpu_seconds = 0.0
        self.baseline_rss_kb = 0

    def start(self) -> None:
        self.baseline_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.cpu_started = cpu_seconds()
        self.started = time.perf_counter()

    def stop(self) -> float:
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = cpu_seconds() - self.cpu_started
        return self.seconds


def emit(clock: Clock, rows: int, **extra: Any) -> None:
    """Print the result line the runner reads."""
    payload = {
        "rows": rows,
        "extract_seconds": clock.seconds,
        "extract_cpu_seconds": clock.cpu_seconds,
        "baseline_rss_kb": clock.baseline_rss_kb,
        **extra,
    }
    print(RESULT_PREFIX + json.dumps(payload), flush=True)


class _NoPandas:
    """A meta-path finder that makes ``import pandas`` fail as if it were not installed."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def without_pandas() -> None:
    """Make ``import pandas`` fail in this process, as in an install without it.

    pandas is in this virtualenv only for the naive contender (the ``bench`` extra); neither the
    provider nor ``dlt[filesystem,parquet]`` depends on it. pyarrow imports pandas, when it can,
    on the first ``pa.array`` of a Python list (1.3-1.5 s here), which would charge the
    benchmark's own extra to whichever contender converts first. Call before importing pyarrow.
    """
    sys.meta_path.insert(0, _NoPandas())  # type: ignore[arg-type]


def provider_process(base_url: str, client_id: str, client_secret: str, extra: dict[str, Any], out_dir: str) -> None:
    """Set this process up as the provider's contenders run: no pandas, ``peopleai_default``
    pointing at the sandbox with ``extra``, and what Airflow's task runner has done before any
    operator runs, which would otherwise be imported inside the timed run (as dlt's imports are
    done before its clock starts): the secrets masker's set-up (settings and secrets backends) and
    the filesystem registry (boto3 and friends on the first ``.fs``).
    """
    without_pandas()
    os.environ["AIRFLOW_CONN_PEOPLEAI_DEFAULT"] = json.dumps(
        {"conn_type": "peopleai", "host": base_url, "login": client_id, "password": client_secret, "extra": extra}
    )
    from airflow_provider_activities.compat import ObjectStoragePath, mask_secret

    logging.getLogger("airflow").setLevel(logging.WARNING)
    mask_secret("peopleai-bench-warm-up")
    ObjectStoragePath(f"file://{out_dir}").fs  # noqa: B018 - loads the filesystem registry
