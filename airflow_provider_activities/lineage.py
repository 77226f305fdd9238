"""OpenLineage metadata of a run: the People.ai API as input, the dataset root written as output.

The operators' ``get_openlineage_facets_on_start`` and ``get_openlineage_facets_on_complete``
build their :class:`~airflow.providers.openlineage.extractors.OperatorLineage` with the functions
here, the way the official transfer operators do: every OpenLineage import sits inside a
function, so importing this module (and the operators) needs no OpenLineage package, and
:func:`run_lineage` and :func:`operator_lineage` answer ``None`` when the OpenLineage provider
(``pip install airflow-provider-activities[openlineage]``) is not installed.

Datasets are named as OpenLineage's naming spec says:

* the API: namespace ``scheme://host[:port]`` of its base URL (``https://api.people.ai``), name
  the endpoint path (``/v0/public/activities``), below the base URL's own path if it has one;
* a local directory: namespace ``file`` (``file://host`` for a URL naming a host), name the
  absolute path;
* object storage: namespace ``s3://bucket`` (``s3a`` is named ``s3``), ``gs://bucket`` (``gcs`` is
  named ``gs``), ``abfs://container`` ...; name the key prefix (``/`` for a bucket's root).

An output is always the dataset root the run writes below (``.../activities``), never one file
or partition: each run replaces some partitions of the same dataset.

No secret reaches a facet: user info (passwords, tokens, an Airflow connection id written as
``s3://conn_id@bucket``), query strings (pre-signed URLs' signatures) and fragments are dropped
from every URL, and an endpoint must be a path, not a URL. Only names, paths, Arrow types, the
schema's field descriptions and counts are emitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import pyarrow as pa

if TYPE_CHECKING:
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        DatasetFacet,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SchemaDatasetFacet,
        SchemaDatasetFacetFields,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.generated.base import OutputDatasetFacet

    from airflow_provider_activities.compat import ObjectStoragePath

    Root = str | ObjectStoragePath

_SCHEME_NAMES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}
"""Schemes that name the same store as another: the dataset is named by the canonical one."""

_AZURE_SCHEMES = frozenset({"abfs", "abfss", "az", "wasb", "wasbs"})
_AZURE_HOST_SUFFIX = ".core.windows.net"

ARRAY_ELEMENT = "_element"
"""The name of the one nested field that describes a list's items (OpenLineage's convention)."""


@dataclass(frozen=True)
class OutputStatistics:
    """What one run wrote: the ``OutputStatisticsOutputDatasetFacet`` of its output.

    :param rows: rows in the Parquet files the run published.
    :param bytes: their size in bytes (manifests not counted).
    :param files: how many Parquet files.
    """

    rows: int
    bytes: int
    files: int

    @classmethod
    def of_files(cls, files: Mapping[str, Iterable[WrittenFile]]) -> OutputStatistics:
        """The statistics of a Parquet writer's result.

        :param files: the written files per partition (each with ``rows`` and ``bytes``), as the
            partitioned Parquet writer's ``close()`` returns them and ``publish`` takes them.
        """
        rows = size = count = 0
        for partition_files in files.values():
            for written in partition_files:
                rows += written.rows
                size += written.bytes
                count += 1
        return cls(rows=rows, bytes=size, files=count)


class WrittenFile(Protocol):
    """One Parquet file as the writer reports it (only what the statistics need)."""

    @property
    def rows(self) -> int:
        """Rows in the file."""

    @property
    def bytes(self) -> int:
        """The file's size in bytes."""


# --------------------------------------------------------------------------------------------
# Names (plain strings: no OpenLineage package needed)
# --------------------------------------------------------------------------------------------


def api_dataset_id(base_url: str, endpoint_path: str) -> tuple[str, str]:
    """The OpenLineage ``(namespace, name)`` of an API endpoint.

    :param base_url: the API's base URL as the connection gives it (``https://api.people.ai``,
        ``http://127.0.0.1:8765``); its user info, query and fragment are dropped.
    :param endpoint_path: the endpoint's path (``/v0/public/activities``); a query is dropped.
    :return: ``("https://api.people.ai", "/v0/public/activities")``; the base URL's own path, if
        any, is the start of the name.
    :raises ValueError: for a base URL that is not ``http(s)://host``, or an endpoint that is not a path.
    """
    if not isinstance(base_url, str) or "://" not in base_url:
        raise ValueError(f"base_url={_shown(base_url)} must be the API's URL, such as https://api.people.ai.")
    parts = urlsplit(base_url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"base_url={_shown(base_url)} must be an http(s) URL with a host, such as https://api.people.ai."
        )
    if not isinstance(endpoint_path, str) or not endpoint_path.startswith("/") or "://" in endpoint_path:
        raise ValueError(
            f"endpoint_path={_shown(endpoint_path)} must be the endpoint's path, such as /v0/public/activities "
            "(not a URL)."
        )
    host = parts.hostname
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    path = endpoint_path.split("?", 1)[0].split("#", 1)[0]
    return f"{parts.scheme.lower()}://{host}{port}", parts.path.rstrip("/") + path


def dataset_id(root: Root) -> tuple[str, str]:
    """The OpenLineage ``(namespace, name)`` of a directory a dataset is written to.

    :param root: the dataset root, as an ``ObjectStoragePath`` or an object-storage URL
        (``file:///abs/dir/activities``, ``s3://bucket/prefix/activities``); a plain absolute path
        is a local directory. The connection id of an ``ObjectStoragePath``, and any user info,
        query or fragment of a URL, are not part of the name.
    :return: ``("file", "/abs/dir/activities")``, ``("s3://bucket", "prefix/activities")``,
        ``("gs://bucket", "prefix/activities")``.
    :raises ValueError: for a relative local path, or a URL without a bucket.
    """
    url = root if isinstance(root, str) else _url_of(root)
    if "://" not in url:
        if not url.startswith("/"):
            raise ValueError(
                f"root={_shown(url)} must be a URL (file:///abs/dir, s3://bucket/prefix) or an absolute path."
            )
        url = f"file://{url}"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    scheme = _SCHEME_NAMES.get(scheme, scheme)
    if scheme == "file":
        host = parts.hostname or ""
        namespace = f"file://{host}" if host and host != "localhost" else "file"
        return namespace, _strip_slash(parts.path or "/")
    netloc = parts.netloc.rpartition("@")[2]  # user info: an Airflow connection id, or credentials
    if scheme in _AZURE_SCHEMES and netloc.lower().endswith(_AZURE_HOST_SUFFIX) and "@" in parts.netloc:
        container = parts.netloc.rpartition("@")[0]
        if ":" not in container:  # container@account.dfs.core.windows.net: the container is a name
            netloc = f"{container}@{netloc}"
    if not netloc:
        raise ValueError(f"root={_shown(url)} names no bucket: write it as {scheme}://bucket/prefix.")
    name = _strip_slash(parts.path).lstrip("/")
    return f"{scheme}://{netloc}", name or "/"


def _url_of(path: ObjectStoragePath) -> str:
    """The URL of an ``ObjectStoragePath`` from its protocol and path: never its connection id
    (which ``str(path)`` shows as user info, ``s3://conn_id@bucket/key``).
    """
    protocol = path.protocol or "file"
    if protocol in ("file", "local"):
        return "file:///" + path.path.lstrip("/")
    return f"{protocol}://{path.path}"


def _shown(value: object) -> str:
    """``value`` as an error message may show it (quoted): a URL without user info, query or fragment."""
    if not isinstance(value, str):
        return repr(value)
    text = value.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = text.partition("://")
    if sep:
        netloc, slash, path = rest.partition("/")
        text = f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}"
    return repr(text)


def _strip_slash(path: str) -> str:
    """``path`` without trailing slashes (``/`` stays ``/``)."""
    return path.rstrip("/") or "/"


# --------------------------------------------------------------------------------------------
# Facets and datasets (OpenLineage provider needed: call these from the lineage methods only)
# --------------------------------------------------------------------------------------------


def schema_facet(schema: pa.Schema) -> SchemaDatasetFacet:
    """The ``SchemaDatasetFacet`` of an Arrow schema, nested types as nested fields.

    Each field is named as in the schema, typed by its Arrow type (``string``, ``int64``,
    ``timestamp[ms, tz=UTC]``; ``struct``, ``list``, ``map`` for nested types) and described by
    its ``description`` metadata. A struct's fields are its nested fields; a list has one nested
    field, :data:`ARRAY_ELEMENT`, for its items; a map has ``key`` and ``value``.

    :param schema: the dataset's Arrow schema.
    """
    from airflow.providers.common.compat.openlineage.facet import SchemaDatasetFacet

    return SchemaDatasetFacet(fields=[_schema_field(field) for field in schema])


def _schema_field(field: pa.Field) -> SchemaDatasetFacetFields:
    """One field of :func:`schema_facet`, with its nested fields."""
    from airflow.providers.common.compat.openlineage.facet import SchemaDatasetFacetFields

    metadata = field.metadata or {}
    description = metadata.get(b"description")
    children = [_schema_field(child) for child in _children(field.type)]
    return SchemaDatasetFacetFields(
        name=field.name,
        type=_type_name(field.type),
        description=description.decode("utf-8") if description is not None else None,
        fields=children or None,
    )


def _children(type_: pa.DataType) -> list[pa.Field]:
    """The nested fields of a struct, list or map type (none for other types)."""
    if pa.types.is_struct(type_):
        return [type_.field(i) for i in range(type_.num_fields)]
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return [type_.value_field.with_name(ARRAY_ELEMENT)]
    if pa.types.is_map(type_):
        return [type_.key_field.with_name("key"), type_.item_field.with_name("value")]
    return []


def _type_name(type_: pa.DataType) -> str:
    """Arrow's name of a type; for nested types only the kind, their parts are nested fields."""
    if pa.types.is_struct(type_):
        return "struct"
    if pa.types.is_map(type_):
        return "map"
    if pa.types.is_large_list(type_):
        return "large_list"
    if pa.types.is_fixed_size_list(type_):
        return f"fixed_size_list[{type_.list_size}]"
    if pa.types.is_list(type_):
        return "list"
    return str(type_)


def statistics_facet(statistics: OutputStatistics) -> OutputStatisticsOutputDatasetFacet:
    """The ``OutputStatisticsOutputDatasetFacet`` of a run: rows, bytes and files written.

    :param statistics: what the run wrote (see :meth:`OutputStatistics.of_files`).
    """
    from airflow.providers.common.compat.openlineage.facet import OutputStatisticsOutputDatasetFacet

    return OutputStatisticsOutputDatasetFacet(
        rowCount=statistics.rows, size=statistics.bytes, fileCount=statistics.files
    )


def api_dataset(base_url: str, endpoint_path: str) -> Dataset:
    """The input dataset of a run: the People.ai API endpoint it reads (see :func:`api_dataset_id`).

    :param base_url: the API's base URL (the connection's, e.g. ``https://api.people.ai``).
    :param endpoint_path: the endpoint's path, e.g. ``/v0/public/activities``.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset

    namespace, name = api_dataset_id(base_url, endpoint_path)
    return Dataset(namespace=namespace, name=name)


def output_dataset(
    root: Root, schema: pa.Schema | None = None, statistics: OutputStatistics | None = None
) -> OutputDataset:
    """The output dataset of a run: the dataset root written (see :func:`dataset_id`).

    :param root: the dataset root (``{output_path}/activities``), an ``ObjectStoragePath`` or URL.
    :param schema: the dataset's Arrow schema, for the ``schema`` facet; ``None`` leaves it out.
    :param statistics: what the run wrote, for the ``outputStatistics`` facet; ``None`` (before
        the run, or when it failed before publishing) leaves it out.
    """
    from airflow.providers.common.compat.openlineage.facet import OutputDataset

    namespace, name = dataset_id(root)
    facets: dict[str, DatasetFacet] = {"schema": schema_facet(schema)} if schema is not None else {}
    output_facets: dict[str, OutputDatasetFacet] = {}
    if statistics is not None:
        output_facets["outputStatistics"] = statistics_facet(statistics)
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets)


def operator_lineage(inputs: Sequence[Dataset], outputs: Sequence[Dataset]) -> OperatorLineage | None:
    """The ``OperatorLineage`` of ``inputs`` and ``outputs``; ``None`` without the OpenLineage provider.

    :param inputs: the datasets read (:func:`api_dataset`).
    :param outputs: the datasets written (:func:`output_dataset`).
    """
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    return OperatorLineage(inputs=list(inputs), outputs=list(outputs))


def run_lineage(
    *,
    base_url: str,
    endpoint_path: str,
    root: Root,
    schema: pa.Schema | None = None,
    statistics: OutputStatistics | None = None,
) -> OperatorLineage | None:
    """The whole ``OperatorLineage`` of one run: the API endpoint in, the dataset root out.

    ``None`` when the OpenLineage provider is not installed (nothing is imported then).

    :param base_url: the API's base URL (the connection's, e.g. ``https://api.people.ai``).
    :param endpoint_path: the endpoint read, e.g. ``/v0/public/activities``.
    :param root: the dataset root written (``{output_path}/activities``).
    :param schema: the dataset's Arrow schema; known before the run.
    :param statistics: what the run wrote; known once it published (``None`` before).
    """
    if not openlineage_available():
        return None
    return operator_lineage([api_dataset(base_url, endpoint_path)], [output_dataset(root, schema, statistics)])


def openlineage_available() -> bool:
    """Whether the OpenLineage provider (and so its client) can be imported."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage  # noqa: F401
    except ImportError:
        return False
    return True
