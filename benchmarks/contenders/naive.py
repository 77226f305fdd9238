"""Contender 2, the naive path: what people write in a ``PythonOperator``.

A ``requests`` loop over offset/limit, one page after another, every record collected in one
list, then ``pandas.json_normalize`` and ``DataFrame.to_parquet`` (pyarrow engine, its default
snappy codec). It fetches a bearer token first, and on a 429 sleeps one second and asks again
(what such code grows after its first 429), counting the 429s.
"""

from __future__ import annotations

import os
import time

import pandas as pd
import pyarrow.parquet  # noqa: F401 - imported up front: to_parquet would import it inside the timing
import requests

from benchmarks.contenders.common import ACTIVITIES_PATH, Clock, Spec, emit, fetch_token


def main() -> None:
    spec = Spec.from_argv()
    clock = Clock()
    clock.start()
    session = requests.Session()
    token = fetch_token(session, spec)
    records: list[dict] = []
    offset = 0
    throttled = 0
    while True:
        answer = session.get(
            spec.base_url + ACTIVITIES_PATH,
            params={**spec.filters, "offset": offset, "limit": spec.page_size},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        if answer.status_code == 429:
            throttled += 1
            time.sleep(1.0)
            continue
        answer.raise_for_status()
        page = answer.json()["data"]
        records.extend(page)
        if len(page) < spec.page_size:
            break
        offset += spec.page_size
    frame = pd.json_normalize(records)
    frame.to_parquet(os.path.join(spec.out_dir, "activities.parquet"), index=False)
    clock.stop()
    emit(clock, len(frame), client_429s=throttled)


if __name__ == "__main__":
    main()
