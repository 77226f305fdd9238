"""Contender 3, dlt: its REST API source against the sandbox, the filesystem destination writing Parquet.

``dlt.sources.rest_api.rest_api_source`` with dlt's own ``OAuth2ClientCredentials`` auth (it
posts the form-encoded client-credentials grant to the token endpoint and sends the bearer
token; no token is fetched by hand), an ``OffsetPaginator`` (``offset``/``limit``, the
page size of the others, stopping at ``meta.total``) and ``data_selector="data"``; the same
day filters as the others. ``pipeline.run(..., loader_file_format="parquet")`` into
``dlt.destinations.filesystem`` on a ``file://`` bucket. dlt's defaults otherwise (its
normaliser unnests the two list columns into child tables, as it does for any user). The
pipelines directory and dlt's data directory are temporary; telemetry is off.
"""

from __future__ import annotations

import glob
import os

from benchmarks.contenders.common import ACTIVITIES_PATH, TOKEN_PATH, Clock, Spec, emit, without_pandas


def main() -> None:
    spec = Spec.from_argv()
    without_pandas()
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")
    os.environ.setdefault("DLT_DATA_DIR", os.path.join(spec.out_dir, "dlt-data"))
    import dlt
    import dlt.common.libs.pyarrow

    # What dlt would otherwise import inside the timed run (the import cost is not the extraction's).
    import dlt.destinations.impl.filesystem.filesystem
    import dlt.load
    import dlt.normalize
    import pyarrow.parquet as pq
    from dlt.sources.helpers.rest_client.auth import OAuth2ClientCredentials
    from dlt.sources.helpers.rest_client.paginators import OffsetPaginator
    from dlt.sources.rest_api import rest_api_source

    lake = os.path.join(spec.out_dir, "lake")
    clock = Clock()
    clock.start()
    source = rest_api_source(
        {
            "client": {
                "base_url": spec.base_url + "/",
                "auth": OAuth2ClientCredentials(
                    access_token_url=spec.base_url + TOKEN_PATH,
                    client_id=spec.client_id,
                    client_secret=spec.client_secret,
                ),
                "paginator": OffsetPaginator(
                    limit=spec.page_size, offset_param="offset", limit_param="limit", total_path="meta.total"
                ),
            },
            "resources": [
                {
                    "name": "activities",
                    "endpoint": {
                        "path": ACTIVITIES_PATH.lstrip("/"),
                        "params": dict(spec.filters),
                        "data_selector": "data",
                    },
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="peopleai_bench",
        destination=dlt.destinations.filesystem(bucket_url=f"file://{lake}"),
        dataset_name="peopleai",
        pipelines_dir=os.path.join(spec.out_dir, "pipelines"),
    )
    pipeline.run(source, loader_file_format="parquet")
    clock.stop()
    files = glob.glob(os.path.join(lake, "peopleai", "activities", "*.parquet"))
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    emit(clock, rows, files=len(files))


if __name__ == "__main__":
    main()
