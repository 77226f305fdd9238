"""Publishing staged partitions on file:// and on S3 (moto): replace, manifests, failures, reruns."""

from __future__ import annotations

import functools
import inspect
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_activities.compat import ObjectStoragePath
from airflow_provider_activities.records.convert import RecordConverter
from airflow_provider_activities.records.schemas import ACTIVITY_SCHEMA, file_schema, schema_fingerprint
from airflow_provider_activities.storage.publish import (
    MANIFEST_NAME,
    STAGING_DIR,
    SUCCESS_NAME,
    PublishRestoreError,
    manifest_bytes,
    new_staging_root,
    publish,
)
from airflow_provider_activities.storage.writer import FileInfo, PartitionedParquetWriter
from tests.s3_fixtures import moto_s3  # noqa: F401
from tests.test_parquet import ACTIVITY_FILE_SCHEMA, activity, hive_dataset

EMAIL = "activity_type=email/activity_date=2026-11-01"
CALL = "activity_type=call/activity_date=2026-11-01"
MEETING = "activity_type=meeting/activity_date=2026-11-02"
BASE_MANIFEST = {
    "interval": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-11-02T00:00:00+00:00"},
    "api": {"endpoint": "/v0/public/activities", "filters": {"from": "2026-11-01", "to": "2026-11-01"}},
    "duplicates_dropped": 3,
    "outside_interval_dropped": 1,
    "provider_version": "0.1.0",
    "dag_id": "peopleai_daily",
    "run_id": "manual__1",
    "finished_at": "2026-11-02T00:05:00+00:00",
}
# Version 1 and 2 of the same two partitions (v2 drops a file from EMAIL and adds one to CALL).
V1 = {EMAIL: [activity(i, activity_type="email") for i in range(5)], CALL: [activity(i, activity_type="call") for i in range(10, 12)]}
V2 = {EMAIL: [activity(i, activity_type="email") for i in range(20, 23)], CALL: [activity(i, activity_type="call") for i in range(30, 34)]}
OTHER = {MEETING: [activity(i, day=1, activity_type="meeting") for i in range(40, 43)]}


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path) -> Callable[[], ObjectStoragePath]:
    """A factory of fresh, empty dataset directories on the store of the parameter."""
    if request.param == "file":
        return lambda: ObjectStoragePath(f"file://{tmp_path}/{uuid.uuid4().hex[:8]}/activities")
    moto = request.getfixturevalue("moto_s3")
    return lambda: ObjectStoragePath(f"s3://{moto.bucket}/{uuid.uuid4().hex[:12]}/activities", conn_id=moto.conn_id)


def stage(root: ObjectStoragePath, data: dict[str, list[dict[str, Any]]]) -> tuple[ObjectStoragePath, dict[str, list[FileInfo]]]:
    """Write ``data`` (records per partition) into a new staging directory, two rows per file."""
    staging = new_staging_root(root)
    converter = RecordConverter(ACTIVITY_SCHEMA)
    writer = PartitionedParquetWriter(staging, ACTIVITY_FILE_SCHEMA, row_group_size=2, max_rows_per_file=2)
    for partition, records in data.items():
        writer.write(partition, converter.to_batch(records).drop_columns(["activity_type"]))
    return staging, writer.close()


def run(root: ObjectStoragePath, data: dict[str, list[dict[str, Any]]], **manifest: Any) -> list:
    staging, files = stage(root, data)
    return publish(staging, root, files, {**BASE_MANIFEST, **manifest})


def contents(root: ObjectStoragePath) -> dict[str, bytes]:
    """Every object below ``root`` (fresh listing) by relative path."""
    fs = root.fs
    fs.invalidate_cache()
    base = root.path.rstrip("/")
    if not fs.exists(base):
        return {}
    paths = sorted(fs.find(base))
    found = fs.cat(paths) if paths else {}  # one batched call (concurrent on s3)
    return {path[len(base) + 1 :]: found[path] for path in paths}


def visible(listing: dict[str, bytes]) -> dict[str, bytes]:
    """What readers see of a :func:`contents` listing: everything but the staging area."""
    return {path: data for path, data in listing.items() if not path.startswith(STAGING_DIR + "/")}


def staging_dirs(listing: dict[str, bytes]) -> set[str]:
    """The run tokens of the staging directories in a :func:`contents` listing."""
    return {path.split("/")[1] for path in listing if path.startswith(STAGING_DIR + "/")}


def uids(root: ObjectStoragePath) -> list[str]:
    """The uids a pyarrow.dataset reader sees below ``root`` (hive partitioning)."""
    return sorted(hive_dataset(root.path, filesystem=root.fs).to_table().column("uid").to_pylist())


def expected_uids(*versions: dict[str, list[dict[str, Any]]]) -> list[str]:
    return sorted(record["uid"] for version in versions for records in version.values() for record in records)


def assert_published(listing: dict[str, bytes], data: dict[str, list[dict[str, Any]]]) -> None:
    """In a :func:`contents` listing, each partition of ``data`` holds exactly its files, manifest and _SUCCESS."""
    listing = visible(listing)
    for partition, records in data.items():
        manifest = json.loads(listing[f"{partition}/{MANIFEST_NAME}"])
        names = [info["name"] for info in manifest["files"]]
        assert sorted(path for path in listing if path.startswith(partition + "/")) == sorted(
            [f"{partition}/{name}" for name in names] + [f"{partition}/{MANIFEST_NAME}", f"{partition}/{SUCCESS_NAME}"]
        )
        assert listing[f"{partition}/{SUCCESS_NAME}"] == b""
        assert manifest["rows"] == len(records)
        assert [len(listing[f"{partition}/{info['name']}"]) for info in manifest["files"]] == [
            info["bytes"] for info in manifest["files"]
        ]


# -- publish -----------------------------------------------------------------------------------


def test_first_publish_writes_partitions_manifests_and_removes_staging(store) -> None:
    root = store()
    published = run(root, V1)
    assert [(p.partition, p.rows, [f.name for f in p.files]) for p in published] == [
        (CALL, 2, ["part-00000.parquet"]),
        (EMAIL, 5, ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]),
    ]
    assert published[1].uri == str(root / EMAIL)
    assert_published(contents(root), V1)
    assert not any(path.startswith(STAGING_DIR) for path in contents(root))
    assert not root.fs.exists((root / STAGING_DIR).path)  # on file:// the emptied _staging goes too
    assert uids(root) == expected_uids(V1)

    manifest = json.loads(visible(contents(root))[f"{EMAIL}/{MANIFEST_NAME}"])
    assert {key: manifest[key] for key in BASE_MANIFEST} == BASE_MANIFEST
    assert manifest["partition"] == EMAIL
    assert manifest["files"] == [
        {"name": f.name, "rows": f.rows, "bytes": f.bytes} for f in published[1].files
    ]
    assert manifest["schema_fingerprint"] == schema_fingerprint(file_schema(ACTIVITY_SCHEMA, ["activity_type"]))
    text = visible(contents(root))[f"{EMAIL}/{MANIFEST_NAME}"].decode()
    assert text == json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_rerun_replaces_its_partitions_only_and_leaves_no_old_file(store) -> None:
    root = store()
    run(root, OTHER)
    run(root, V1)
    other_before = {path: data for path, data in visible(contents(root)).items() if path.startswith(MEETING)}
    run(root, V2, run_id="manual__2")
    assert_published(contents(root), V2)
    listing = visible(contents(root))
    assert f"{EMAIL}/part-00002.parquet" not in listing  # v1 had three files, v2 two
    assert f"{CALL}/part-00001.parquet" in listing
    assert {path: data for path, data in listing.items() if path.startswith(MEETING)} == other_before
    assert uids(root) == expected_uids(OTHER, V2)
    assert json.loads(listing[f"{EMAIL}/{MANIFEST_NAME}"])["run_id"] == "manual__2"


def test_rerun_with_the_same_data_gives_byte_identical_parquet(store) -> None:
    root = store()
    run(root, V1)
    first = {path: data for path, data in visible(contents(root)).items() if path.endswith(".parquet")}
    run(root, V1, finished_at="later")
    assert {path: data for path, data in visible(contents(root)).items() if path.endswith(".parquet")} == first


def test_staging_is_invisible_to_dataset_readers(store) -> None:
    root = store()
    run(root, V1)
    staging, files = stage(root, V2)  # staged, not published
    assert any(path.startswith(STAGING_DIR + "/") and path.endswith(".parquet") for path in contents(root))
    assert uids(root) == expected_uids(V1)
    publish(staging, root, files, BASE_MANIFEST)
    assert uids(root) == expected_uids(V2)


def test_publish_checks_its_input_before_touching_anything(store) -> None:
    root = store()
    run(root, V1)
    before = visible(contents(root))
    staging, files = stage(root, V2)
    missing = {**files, EMAIL: [*files[EMAIL], FileInfo("part-00009.parquet", 1, 10)]}
    with pytest.raises(ValueError, match="part-00009.parquet: missing"):
        publish(staging, root, missing, BASE_MANIFEST)
    assert staging_dirs(contents(root)) == set()  # staging removed after a failure too
    staging, files = stage(root, V2)
    with pytest.raises(ValueError, match="inside partition"):
        publish(staging, root, {**files, "activity_type=email": []}, BASE_MANIFEST)
    with pytest.raises(ValueError, match="same store"):
        publish(ObjectStoragePath("memory://elsewhere"), root, files, BASE_MANIFEST)
    assert visible(contents(root)) == before


def test_manifest_json_is_deterministic() -> None:
    files = [FileInfo("part-00000.parquet", 3, 1234)]
    base = {"b": 1, "a": {"z": 2, "y": datetime(2026, 11, 1, tzinfo=timezone.utc)}}
    text = manifest_bytes(base, EMAIL, files, "f" * 64)
    assert text == manifest_bytes(dict(reversed(base.items())), EMAIL, files, "f" * 64)
    assert json.loads(text) == {
        "a": {"y": "2026-11-01T00:00:00+00:00", "z": 2},
        "b": 1,
        "files": [{"bytes": 1234, "name": "part-00000.parquet", "rows": 3}],
        "partition": EMAIL,
        "rows": 3,
        "schema_fingerprint": "f" * 64,
    }
    assert text.decode().startswith('{\n  "a": {\n    "y"')


# -- failures ----------------------------------------------------------------------------------


class InjectedFailure(OSError):
    """The storage failure a test injects."""


class FailingOperations:
    """Makes the ``fail_at``-th storage operation (0-based) of a filesystem raise.

    Patches the filesystem instance Airflow's ObjectStoragePath uses: the mutating methods of
    the local filesystem, and the per-object coroutines of s3fs (so a batched copy can fail
    half-way). ``permanent`` makes every later operation fail too (the store went down).
    """

    LOCAL = ("mv", "pipe_file", "makedirs", "rm", "cp_file")
    S3 = ("_cp_file", "_pipe_file", "_bulk_delete", "_put_file")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fs: Any, fail_at: int | None, permanent: bool = False) -> None:
        self.count = 0
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.permanent = permanent
        for name in self.S3 if fs.protocol[0].startswith("s3") else self.LOCAL:
            monkeypatch.setattr(fs, name, self._wrap(name, getattr(fs, name)))

    def _check(self, name: str) -> None:
        index = self.count
        self.count += 1
        self.calls.append(name)
        if self.fail_at is not None and (index == self.fail_at or (self.permanent and index > self.fail_at)):
            raise InjectedFailure(f"injected failure of operation {index} ({name})")

    def _wrap(self, name: str, method: Callable) -> Callable:
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                self._check(name)
                return await method(*args, **kwargs)

            return async_wrapper

        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._check(name)
            return method(*args, **kwargs)

        return wrapper


def _copy_tree(source: ObjectStoragePath, target: ObjectStoragePath) -> None:
    fs = source.fs
    fs.invalidate_cache()
    paths = sorted(fs.find(source.path))
    targets = [target.path + path[len(source.path) :] for path in paths]
    for path in targets if source.protocol == "file" else []:
        fs.makedirs(fs._parent(path), exist_ok=True)
    fs.copy(paths, targets)


def test_a_failure_at_any_operation_leaves_every_partition_as_before_and_a_rerun_succeeds(store, monkeypatch) -> None:
    template = store()
    run(template, OTHER)
    run(template, V1)
    before = visible(contents(template))

    counted = store()
    _copy_tree(template, counted)
    staging, files = stage(counted, V2)
    with monkeypatch.context() as patch:
        operations = FailingOperations(patch, counted.fs, fail_at=None)
        publish(staging, counted, files, BASE_MANIFEST)
    assert operations.count >= 6, operations.calls

    for fail_at in range(operations.count):
        root = store()
        _copy_tree(template, root)
        staging, files = stage(root, V2)
        with monkeypatch.context() as patch:
            injected = FailingOperations(patch, root.fs, fail_at=fail_at)
            try:
                publish(staging, root, files, BASE_MANIFEST)
                failed = False
            except InjectedFailure:
                failed = True
        where = f"failure at operation {fail_at} of {injected.calls}"
        listing = contents(root)
        if failed:
            assert visible(listing) == before, where
        else:  # the failure hit the best-effort removal of staging, after publishing
            assert_published(listing, V2)
        left_over = staging_dirs(listing)  # the staging of a run whose best-effort cleanup failed
        assert left_over == (set() if failed else {staging.name}), where
        if failed and fail_at % 3 and root.protocol != "file":
            continue  # on moto (about 10 ms a request) the read-back and rerun run for every third case
        assert uids(root) == expected_uids(OTHER, V1 if failed else V2), where
        run(root, V2)
        listing = contents(root)
        assert_published(listing, V2)
        assert staging_dirs(listing) == left_over, where
        assert uids(root) == expected_uids(OTHER, V2), where


def test_when_the_store_stays_down_the_restore_error_says_where_the_backup_is(store, monkeypatch) -> None:
    template = store()
    run(template, V1)
    before = visible(contents(template))
    kept = "_previous" if template.protocol in ("file", "local", "") else "_backup"
    outcomes = []
    for fail_at in range(0, 40, 3):
        root = store()
        _copy_tree(template, root)
        staging, files = stage(root, V2)
        with monkeypatch.context() as patch:
            FailingOperations(patch, root.fs, fail_at=fail_at, permanent=True)
            try:
                publish(staging, root, files, BASE_MANIFEST)
                outcomes.append("published")
            except InjectedFailure:  # nothing published had changed yet: restored, or nothing to restore
                outcomes.append("restored")
                assert visible(contents(root)) == before
            except PublishRestoreError as error:
                outcomes.append("kept")
                assert f"{STAGING_DIR}/" in str(error) and kept in str(error)
                listing = contents(root)
                backup = {
                    path.split(f"/{kept}/", 1)[1]: data
                    for path, data in listing.items()
                    if path.startswith(f"{STAGING_DIR}/") and f"/{kept}/" in path
                }
                for partition in V1:  # each previous partition is complete in place or in the backup
                    previous = {path: data for path, data in before.items() if path.startswith(partition + "/")}
                    in_place = {path: data for path, data in visible(listing).items() if path.startswith(partition + "/")}
                    saved = {path: data for path, data in backup.items() if path.startswith(partition + "/")}
                    assert previous in (in_place, saved), (fail_at, partition)
        if outcomes[-1] == "published":
            break
    assert "kept" in outcomes, outcomes
