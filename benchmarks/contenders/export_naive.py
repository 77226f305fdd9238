"""Export contender 2, the naive path: what people write in a ``PythonOperator``.

The job's flow by hand with ``requests`` (token, ``POST`` the job, poll, ``GET`` its data), the
whole body in memory, ``gzip.decompress``, ``json.loads`` per line into one list, then
``pandas.json_normalize`` and ``DataFrame.to_parquet`` (pyarrow engine, its default snappy codec),
one file, no partitioning, no de-duplication.
"""

from __future__ import annotations

import gzip
import json
import os

import pandas as pd
import pyarrow.parquet  # noqa: F401 - imported up front: to_parquet would import it inside the timing
import requests

from benchmarks.contenders.common import Clock, emit
from benchmarks.contenders.export_common import ExportSpec, export_data


def main() -> None:
    spec = ExportSpec.from_argv()
    clock = Clock()
    clock.start()
    with requests.Session() as session:
        body = export_data(session, spec).content
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    records = [json.loads(line) for line in body.splitlines() if line.strip()]
    del body
    frame = pd.json_normalize(records)
    frame.to_parquet(os.path.join(spec.out_dir, "raw_activities.parquet"), index=False)
    clock.stop()
    emit(clock, len(frame))


if __name__ == "__main__":
    main()
