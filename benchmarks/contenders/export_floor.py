"""Export contender 3, the floor: download, gunzip, ``pyarrow.json.read_json``, one Parquet file.

The job's flow by hand with ``requests`` (token, ``POST`` the job, poll, ``GET`` its data), the
body streamed to a local file, then Arrow's JSON reader on the gunzipped stream with its defaults
(schema inferred, threads on) and ``pyarrow.parquet.write_table`` with zstd: one file, no
partitioning, no de-duplication, no schema of the vendor's. The stream is inflated by ISA-L
(``isal.igzip``), as the provider reads its files, so the floor is not slowed by a slower
inflate. Nothing a client must do to land the data can be cheaper on this machine with these
libraries.
"""

from __future__ import annotations

import os

import pyarrow.json as pa_json
import pyarrow.parquet as pq
import requests
from isal import igzip

from benchmarks.contenders.common import Clock, emit, without_pandas
from benchmarks.contenders.export_common import ExportSpec, export_data

CHUNK_BYTES = 1 << 20


def main() -> None:
    spec = ExportSpec.from_argv()
    without_pandas()
    path = os.path.join(spec.out_dir, "export.jsonl")
    clock = Clock()
    clock.start()
    with requests.Session() as session, open(path, "wb") as file:
        for chunk in export_data(session, spec).iter_content(CHUNK_BYTES):
            file.write(chunk)
    with open(path, "rb") as file:
        gzipped = file.read(2) == b"\x1f\x8b"
    with igzip.open(path, "rb") if gzipped else open(path, "rb") as stream:
        table = pa_json.read_json(stream)
    pq.write_table(table, os.path.join(spec.out_dir, "raw_activities.parquet"), compression="zstd")
    clock.stop()
    emit(clock, table.num_rows)


if __name__ == "__main__":
    main()
