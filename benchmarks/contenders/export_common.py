"""What the export contenders share: their spec, the job's data request, the partition digest.

Each export contender runs as ``python -m benchmarks.contenders.export_<name> '<spec json>'``,
times its run alone (``extract_seconds``: from its first request to its last file written,
imports excluded) and prints one ``BENCH_RESULT {json}`` line, as the extract contenders do
(:mod:`benchmarks.contenders.common`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from benchmarks.contenders.common import TOKEN_PATH

EXPORT_JOBS_PATH = "/pull/v1/export/activities/jobs"


@dataclass
class ExportSpec:
    """What one export contender run exports, and where to.

    :param base_url: the sandbox's ``http://127.0.0.1:<port>``.
    :param client_id: the API key.
    :param client_secret: the API secret.
    :param start: the first day exported, ``YYYY-MM-DD``.
    :param days: how many days, from ``start``.
    :param out_dir: an empty directory the contender may write to.
    :param expected: records in the export file (for the contender's own sanity, not enforced here).
    :param options: contender switches (none yet).
    """

    base_url: str
    client_id: str
    client_secret: str
    start: str
    days: int
    out_dir: str
    expected: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_argv(cls) -> ExportSpec:
        """The spec passed as the process's first argument."""
        return cls(**json.loads(sys.argv[1]))

    def to_json(self) -> str:
        """The spec as the argument of a contender process."""
        return json.dumps(asdict(self))

    @property
    def first_day(self) -> date:
        """The first day exported."""
        return date.fromisoformat(self.start)

    @property
    def last_day(self) -> date:
        """The last day exported (inclusive)."""
        return self.first_day + timedelta(days=self.days - 1)

    @property
    def interval(self) -> tuple[str, str]:
        """``[start, end)`` as the operator takes it: the UTC midnights around the days."""
        end = self.last_day + timedelta(days=1)
        return f"{self.first_day.isoformat()}T00:00:00+00:00", f"{end.isoformat()}T00:00:00+00:00"


def export_data(session: Any, spec: ExportSpec, poll_interval: float = 0.01) -> Any:
    """A snapshot job of the spec's days, waited for, and the streamed answer of its data request.

    What a hand-written client does: a token from the client-credentials grant, ``POST`` the job,
    poll its status until ``Completed``, ``GET`` its data (following the redirect to the file).

    :param session: a ``requests.Session``.
    :param spec: the days to export.
    :param poll_interval: seconds between two status polls.
    :return: the ``requests.Response`` of the data, not read yet (``stream=True``).
    """
    answer = session.post(
        spec.base_url + TOKEN_PATH,
        data={"grant_type": "client_credentials", "client_id": spec.client_id, "client_secret": spec.client_secret},
        timeout=60,
    )
    answer.raise_for_status()
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    body = {
        "start_date": spec.first_day.isoformat(),
        "end_date": spec.last_day.isoformat(),
        "export_type": "snapshot",
        "activity_type": "all",
        "output_format": "JSONLines",
    }
    answer = session.post(spec.base_url + EXPORT_JOBS_PATH, json=body, headers=headers, timeout=60)
    answer.raise_for_status()
    job_id = answer.json()["job_id"]
    while True:
        answer = session.get(f"{spec.base_url}{EXPORT_JOBS_PATH}/{job_id}", headers=headers, timeout=60)
        answer.raise_for_status()
        state = answer.json()["state"]
        if state == "Completed":
            break
        if state in ("Failed", "Canceled"):
            raise RuntimeError(f"export job {job_id} ended {state}")
        time.sleep(poll_interval)
    answer = session.get(f"{spec.base_url}{EXPORT_JOBS_PATH}/{job_id}/data", headers=headers, timeout=600, stream=True)
    answer.raise_for_status()
    return answer


def partition_digest(rows: Iterable[dict[str, Any]]) -> str:
    """The sha256 of a partition's rows, in order, nested values included (as ``to_pylist`` gives them).

    :param rows: the partition's rows (``pa.Table.to_pylist()``, or batch by batch).
    """
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def lake_digests(directory: str) -> dict[str, str]:
    """:func:`partition_digest` of every ``activity_date=...`` partition below ``directory``, read
    one batch at a time.
    """
    import pyarrow.parquet as pq

    found = {}
    for partition in sorted(glob.glob(os.path.join(directory, "activity_date=*"))):
        paths = sorted(glob.glob(os.path.join(partition, "*.parquet")))
        rows = (row for path in paths for batch in pq.ParquetFile(path).iter_batches(1024) for row in batch.to_pylist())
        found[os.path.basename(partition)] = partition_digest(rows)
    return found
