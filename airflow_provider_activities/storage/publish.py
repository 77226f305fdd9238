"""Publishing a run's staged partitions in place of the previous ones, with their manifests.

A run writes its Parquet files below a staging directory inside the dataset directory,
``{output_path}/{dataset}/_staging/<run token>/<partition>/part-NNNNN.parquet``; readers
(pyarrow, Spark, Hive, Athena/Glue crawlers) skip directories whose names start with ``_`` or
``.``, so they never see staging. :func:`publish` then replaces every partition the run owns
with its staged one, adds ``_manifest.json`` and an empty ``_SUCCESS`` to each, and removes the
staging directory (best effort, also after a failure).

A partition is its whole directory: everything below ``{dataset}/{partition}/`` belongs to it
and is replaced. A rerun therefore replaces exactly the partitions it covers, leaves every other
partition alone, and leaves no file of the earlier run in the partitions it covers.

Guarantees, per store
---------------------

**Local filesystem (``file://``).** Each partition directory is swapped with renames. The staged
directory is completed first (files, ``_manifest.json``, ``_SUCCESS``); then the current
directory is renamed aside (into the staging directory) and the staged one renamed into its
place. Each rename is atomic (the staging directory is on the same filesystem, being inside the
dataset directory), so a reader sees the old partition, no partition for the instant between the
two renames, or the complete new one, never a mix. If anything fails (an exception, including a
task being killed with SIGTERM), the partitions already swapped by this run are swapped back and
the aside copies restored: the dataset is as it was before the run. Only a hard crash (SIGKILL,
power loss) exactly between the two renames of a partition leaves that partition absent, its
previous version kept in ``_staging/<token>/_previous/``; rerunning the interval repairs it.

**Object stores (``s3://``, ``gs://`` ...; no rename).** The partitions' current objects are
first backed up by server-side copy into the staging directory. Then, for all the run's
partitions: the old ``_SUCCESS`` is deleted, the new files are copied in (same names overwrite),
``_manifest.json`` is written, the stale objects (old names not in the new set) are deleted, and
an empty ``_SUCCESS`` is written last. On any exception during these steps every partition of
the run is restored from the backup (objects added by the run deleted, backed-up objects copied
back) and the exception re-raised; then staging is removed. So after :func:`publish` returns or
raises, each partition is either exactly as before or complete. *While* it runs, a directory
listing may briefly show old and new files together: readers that must never see that follow
the convention of waiting for ``_SUCCESS``, or read the files named in ``_manifest.json`` (written
after all new files are in place). If the restore itself fails (the store is down), the error
says so and the backup is kept in ``_staging/<token>/_backup/`` for a manual restore; a hard
crash mid-publish leaves a partition incomplete until the interval is rerun.

Manifests
---------

``_manifest.json`` (sorted keys, indent 2) holds the base dict the operator passes (interval,
API endpoint and filters, duplicates and out-of-interval records dropped, provider version,
DAG and run ids, ``finished_at`` ...) plus, per partition: ``partition``, ``rows``, ``files``
(``[{"name", "rows", "bytes"}]``) and ``schema_fingerprint``. The manifest may differ between
runs (``finished_at``); the Parquet files of a rerun over the same data are byte-identical.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_provider_activities.compat import ObjectStoragePath
from airflow_provider_activities.records.schemas import schema_fingerprint
from airflow_provider_activities.storage.writer import FileInfo, check_partition

log = logging.getLogger(__name__)

STAGING_DIR = "_staging"
"""Name of the directory, inside a dataset directory, that holds the runs' staging areas."""
MANIFEST_NAME = "_manifest.json"
"""Per-partition manifest file name."""
SUCCESS_NAME = "_SUCCESS"
"""Per-partition empty marker, written last."""
_PREVIOUS_DIR = "_previous"
_BACKUP_DIR = "_backup"
_LOCAL_PROTOCOLS = ("file", "local", "")


class PublishRestoreError(RuntimeError):
    """Publishing failed and restoring the previous partitions failed too; the backup is kept."""


@dataclass(frozen=True)
class PublishedPartition:
    """One partition in its final place.

    :param partition: relative partition path (``activity_type=email/activity_date=2026-11-01``).
    :param uri: the partition directory's URI.
    :param rows: rows in its files.
    :param files: its Parquet files.
    """

    partition: str
    uri: str
    rows: int
    files: list[FileInfo] = field(default_factory=list)


def new_staging_root(dataset_root: ObjectStoragePath, token: str | None = None) -> ObjectStoragePath:
    """A fresh staging directory for one run: ``{dataset_root}/_staging/<token>``.

    :param dataset_root: the dataset directory (``{output_path}/activities``).
    :param token: the run's token; a random one by default.
    """
    return dataset_root / STAGING_DIR / (token or uuid.uuid4().hex)


def manifest_bytes(
    base: dict[str, Any], partition: str, files: list[FileInfo], fingerprint: str | None
) -> bytes:
    """The ``_manifest.json`` of one partition: deterministic JSON (sorted keys, indent 2).

    :param base: what the operator reports for the whole run.
    :param partition: relative partition path.
    :param files: the partition's files.
    :param fingerprint: :func:`~airflow_provider_activities.records.schemas.schema_fingerprint` of the files.
    """
    body = dict(base)
    body.update(
        {
            "partition": partition,
            "rows": sum(info.rows for info in files),
            "files": [asdict(info) for info in files],
            "schema_fingerprint": fingerprint,
        }
    )
    text = json.dumps(body, sort_keys=True, indent=2, ensure_ascii=False, default=_json_default)
    return (text + "\n").encode("utf-8")


def _json_default(value: Any) -> str:
    """Datetimes as ISO-8601, anything else JSON does not know as ``str``."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


def publish(
    staging_root: ObjectStoragePath,
    final_root: ObjectStoragePath,
    partitions: dict[str, list[FileInfo]],
    manifest: dict[str, Any],
    schema: pa.Schema | None = None,
) -> list[PublishedPartition]:
    """Replace each partition below ``final_root`` with its staged version, then remove staging.

    See the module docstring for the guarantee on each store. All operations go through
    ``final_root.fs`` (the Airflow-attached fsspec filesystem), whose directory listings are
    refreshed before they are relied on.

    :param staging_root: the run's staging directory, as written by
        :class:`~airflow_provider_activities.storage.writer.PartitionedParquetWriter`; on the same store
        as ``final_root`` and, for ``file://``, on the same filesystem (inside the dataset
        directory, e.g. from :func:`new_staging_root`).
    :param final_root: the dataset directory (``{output_path}/activities``).
    :param partitions: the writer's ``close()`` result: files per relative partition path.
    :param manifest: the run's details, merged into every partition's ``_manifest.json``.
    :param schema: the files' schema, for ``schema_fingerprint``; read from the first staged
        file's footer when not given.
    :return: the published partitions, sorted by partition.
    :raises ValueError: for invalid, nested or staging-overlapping partitions, different stores
        (nothing is touched), or staged files that do not match ``partitions`` (nothing published).
    :raises PublishRestoreError: when publishing failed and so did the restore.
    """
    names = sorted(partitions)
    _check_layout(staging_root, final_root, names)
    fs = final_root.fs
    staging, final = _fs_path(staging_root), _fs_path(final_root)
    local = (final_root.protocol or "") in _LOCAL_PROTOCOLS
    keep_staging = False
    try:
        fs.invalidate_cache()
        _check_staged(fs, staging, partitions)
        fingerprint: str | None
        fingerprint = schema_fingerprint(schema) if schema is not None else _staged_fingerprint(fs, staging, partitions)
        manifests = {name: manifest_bytes(manifest, name, partitions[name], fingerprint) for name in names}
        if local:
            _publish_by_rename(fs, staging, final, names, manifests)
        else:
            _publish_by_copy(fs, staging, final, names, partitions, manifests)
    except PublishRestoreError:
        keep_staging = True
        raise
    finally:
        if not keep_staging:
            _remove_quietly(fs, staging, local)
    return [
        PublishedPartition(
            partition=name,
            uri=str(final_root / name),
            rows=sum(info.rows for info in partitions[name]),
            files=list(partitions[name]),
        )
        for name in names
    ]


# -- checks ------------------------------------------------------------------------------------


def _fs_path(path: ObjectStoragePath) -> str:
    return path.path.rstrip("/")


def _check_layout(staging_root: ObjectStoragePath, final_root: ObjectStoragePath, names: list[str]) -> None:
    if staging_root.protocol != final_root.protocol or staging_root.conn_id != final_root.conn_id:
        raise ValueError(
            f"staging_root {staging_root} and final_root {final_root} must be on the same store and connection."
        )
    for name in names:
        check_partition(name)
    owned = set(names)
    for name in names:
        segments = name.split("/")
        for depth in range(1, len(segments)):
            if "/".join(segments[:depth]) in owned:
                raise ValueError(f"Partition {name!r} is inside partition {'/'.join(segments[:depth])!r}.")
    staging, final = _fs_path(staging_root), _fs_path(final_root)
    if staging == final:
        raise ValueError("staging_root must not be final_root: use e.g. {final_root}/_staging/<run token>.")
    if staging.startswith(final + "/"):
        relative = staging[len(final) + 1 :]
        for name in names:
            if relative == name or relative.startswith(name + "/"):
                raise ValueError(f"staging_root {staging_root} lies inside partition {name!r}.")


def _check_staged(fs: Any, staging: str, partitions: dict[str, list[FileInfo]]) -> None:
    """Every listed file is staged with its size, and no partition holds unlisted files."""
    try:
        found = fs.find(staging, detail=True)
    except FileNotFoundError:
        found = {}
    sizes = {path.rstrip("/")[len(staging) + 1 :]: info.get("size") for path, info in found.items()}
    expected = {f"{name}/{info.name}": info.bytes for name, files in partitions.items() for info in files}
    problems = [
        f"{relative}: {'missing' if relative not in sizes else f'{sizes[relative]} bytes, expected {size}'}"
        for relative, size in sorted(expected.items())
        if sizes.get(relative) != size
    ]
    for relative in sorted(sizes):
        segments = relative.split("/")
        ancestors = ("/".join(segments[:depth]) for depth in range(1, len(segments)))
        if relative not in expected and any(ancestor in partitions for ancestor in ancestors):
            problems.append(f"{relative}: not listed in the partitions given")
    if problems:
        raise ValueError(f"The staged files below {staging} do not match the partitions given: {'; '.join(problems)}")


def _staged_fingerprint(fs: Any, staging: str, partitions: dict[str, list[FileInfo]]) -> str | None:
    for name in sorted(partitions):
        if partitions[name]:
            with fs.open(f"{staging}/{name}/{partitions[name][0].name}", "rb") as file:
                return schema_fingerprint(pq.read_schema(file))
    return None


# -- local filesystem: swap directories with renames --------------------------------------------


def _publish_by_rename(fs: Any, staging: str, final: str, names: list[str], manifests: dict[str, bytes]) -> None:
    for name in names:
        staged = f"{staging}/{name}"
        fs.makedirs(staged, exist_ok=True)
        fs.pipe_file(f"{staged}/{MANIFEST_NAME}", manifests[name])
        fs.pipe_file(f"{staged}/{SUCCESS_NAME}", b"")
    # (partition, previous version renamed aside, new version renamed into place)
    swapped: list[tuple[str, bool, bool]] = []
    try:
        for name in names:
            staged, target, aside = f"{staging}/{name}", f"{final}/{name}", f"{staging}/{_PREVIOUS_DIR}/{name}"
            fs.makedirs(posixpath.dirname(target), exist_ok=True)
            had_previous = fs.exists(target)
            if had_previous:
                fs.makedirs(posixpath.dirname(aside), exist_ok=True)
                fs.mv(target, aside)
            swapped.append((name, had_previous, False))
            fs.mv(staged, target)
            swapped[-1] = (name, had_previous, True)
    except BaseException as error:
        try:
            for name, had_previous, in_place in reversed(swapped):
                if in_place:
                    fs.mv(f"{final}/{name}", f"{staging}/{name}")
                if had_previous:
                    fs.mv(f"{staging}/{_PREVIOUS_DIR}/{name}", f"{final}/{name}")
        except Exception as restore_error:
            raise _restore_failed(error, restore_error, f"{staging}/{_PREVIOUS_DIR}") from error
        log.warning("Publishing failed (%s); every partition was restored to its previous state.", error)
        raise


# -- object stores: back up, copy in, delete stale; restore on failure -------------------------


def _publish_by_copy(
    fs: Any,
    staging: str,
    final: str,
    names: list[str],
    partitions: dict[str, list[FileInfo]],
    manifests: dict[str, bytes],
) -> None:
    backup = f"{staging}/{_BACKUP_DIR}"
    previous = {name: _relative_files(fs, f"{final}/{name}") for name in names}
    _copy(fs, [(f"{final}/{name}/{rel}", f"{backup}/{name}/{rel}") for name in names for rel in previous[name]])
    try:
        _delete(fs, [f"{final}/{name}/{SUCCESS_NAME}" for name in names if SUCCESS_NAME in previous[name]])
        _copy(
            fs,
            [(f"{staging}/{name}/{info.name}", f"{final}/{name}/{info.name}") for name in names for info in partitions[name]],
        )
        fs.pipe({f"{final}/{name}/{MANIFEST_NAME}": manifests[name] for name in names})
        stale = []
        for name in names:
            keep = {info.name for info in partitions[name]} | {MANIFEST_NAME}
            stale += [f"{final}/{name}/{rel}" for rel in previous[name] if rel not in keep and rel != SUCCESS_NAME]
        _delete(fs, stale)
        fs.pipe({f"{final}/{name}/{SUCCESS_NAME}": b"" for name in names})
    except BaseException as error:
        try:
            _restore_from_backup(fs, final, backup, names, previous)
        except Exception as restore_error:
            raise _restore_failed(error, restore_error, backup) from error
        log.warning("Publishing failed (%s); every partition was restored from its backup.", error)
        raise
    finally:
        fs.invalidate_cache()


def _restore_from_backup(fs: Any, final: str, backup: str, names: list[str], previous: dict[str, list[str]]) -> None:
    fs.invalidate_cache()
    added = []
    for name in names:
        before = set(previous[name])
        added += [f"{final}/{name}/{rel}" for rel in _relative_files(fs, f"{final}/{name}") if rel not in before]
    _delete(fs, added)
    _copy(fs, [(f"{backup}/{name}/{rel}", f"{final}/{name}/{rel}") for name in names for rel in previous[name]])


def _relative_files(fs: Any, directory: str) -> list[str]:
    """The files below ``directory`` (recursively), relative to it, sorted; a fresh listing."""
    fs.invalidate_cache(directory)
    try:
        found = fs.find(directory)
    except FileNotFoundError:
        return []
    prefix = directory + "/"
    return sorted(path[len(prefix) :] for path in found if path.startswith(prefix) and not path.endswith("/"))


def _copy(fs: Any, pairs: Iterable[tuple[str, str]]) -> None:
    pairs = list(pairs)
    if pairs:
        fs.copy([source for source, _ in pairs], [target for _, target in pairs])


def _delete(fs: Any, paths: list[str]) -> None:
    if paths:
        fs.rm(paths)


# -- shared ------------------------------------------------------------------------------------


def _restore_failed(error: BaseException, restore_error: Exception, kept: str) -> PublishRestoreError:
    log.error("Publishing failed (%s) and so did restoring the previous partitions (%s).", error, restore_error)
    return PublishRestoreError(
        f"Publishing failed ({type(error).__name__}: {error}) and restoring the previous partitions failed too "
        f"({type(restore_error).__name__}: {restore_error}). The previous files are kept in {kept}; rerun the "
        "interval to publish it completely."
    )


def discard_staging(staging_root: ObjectStoragePath) -> None:
    """Remove a run's staging directory after a failure before :func:`publish` (best effort)."""
    local = (staging_root.protocol or "") in _LOCAL_PROTOCOLS
    _remove_quietly(staging_root.fs, _fs_path(staging_root), local)


def _remove_quietly(fs: Any, path: str, local: bool) -> None:
    """Delete the staging directory, best effort (it is invisible to readers anyway).

    On a local filesystem the ``_staging`` directory above it goes too when it is left empty.
    """
    try:
        fs.invalidate_cache()
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception as error:
        log.warning("Could not remove the staging directory %s (%s); it is ignored by readers.", path, error)
        return
    parent = posixpath.dirname(path)
    if local and posixpath.basename(parent) == STAGING_DIR:
        with contextlib.suppress(OSError):
            fs.rmdir(parent)  # os.rmdir: only when empty, i.e. no other run is staging


__all__ = [
    "MANIFEST_NAME",
    "STAGING_DIR",
    "SUCCESS_NAME",
    "PublishRestoreError",
    "PublishedPartition",
    "discard_staging",
    "manifest_bytes",
    "new_staging_root",
    "publish",
]
