"""The extract operators end to end on S3: moto's server on loopback, through the ``aws_moto`` connection.

Same checks as ``test_operators.py`` (exact partitions, byte-identical reruns, no leftovers,
failures that leave the previous partitions intact), on the object-store publishing path
(copy in, manifest, delete stale, ``_SUCCESS`` last).
"""

from __future__ import annotations

import functools
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_activities.compat import ObjectStoragePath
from airflow_provider_activities.storage.publish import STAGING_DIR
from airflow_provider_activities.testing.sandbox import Sandbox
from tests.s3_fixtures import MotoS3, moto_s3, s3_root  # noqa: F401
from tests.test_operators import (  # noqa: F401
    DAY,
    NOV_2,
    START,
    _execute_outside_the_task_runner,
    activities_op,
    activity_partitions,
    activity_uids_by_partition,
    api,
    assert_complete_partitions,
    expected_activity_uids,
    expected_participant_keys,
    manifests,
    participant_keys_by_day,
    participant_partitions,
    participants_op,
    read_dataset,
    run,
    sandbox,
    sha256s,
    without_run_details,
)
from tests.test_publish import FailingOperations, InjectedFailure, contents

pytestmark = pytest.mark.s3


def output_of(root: ObjectStoragePath) -> str:
    """The ``output_path`` URL of an ``s3_root`` (without the connection id)."""
    return f"s3://{root.path.rstrip('/')}"


def staged_keys(moto: MotoS3, root: ObjectStoragePath) -> list[str]:
    return [key for key in moto.keys(root.path.split("/", 1)[1] + "/") if f"/{STAGING_DIR}/" in key]


def test_s3_extract_is_exact_returns_plain_uris_and_reruns_byte_identical(
    api: Sandbox, moto_s3: MotoS3, s3_root: ObjectStoragePath
) -> None:
    output = output_of(s3_root)
    summary = run(activities_op(output, output_conn_id=moto_s3.conn_id, max_rows_per_file=40), START, START + 2 * DAY)
    people = run(participants_op(output, output_conn_id=moto_s3.conn_id), START, START + 2 * DAY)

    table = read_dataset(s3_root, "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(api, START, 2)
    assert participant_keys_by_day(read_dataset(s3_root, "participants").to_table()) == expected_participant_keys(api, START, 2)
    first = contents(s3_root)
    assert_complete_partitions(first, "activities", activity_partitions(START, 2))
    assert_complete_partitions(first, "participants", participant_partitions(START, 2))
    assert staged_keys(moto_s3, s3_root) == []
    for result, dataset in ((summary, "activities"), (people, "participants")):
        for partition in result["partitions"]:  # a URI any reader understands, no connection id in it
            assert partition["uri"] == f"{output}/{dataset}/{partition['partition']}"
            assert "aws_moto" not in partition["uri"]

    run(activities_op(output, output_conn_id=moto_s3.conn_id, max_rows_per_file=40), START, START + 2 * DAY)
    run(participants_op(output, output_conn_id=moto_s3.conn_id), START, START + 2 * DAY)
    second = contents(s3_root)
    assert sorted(second) == sorted(first)
    parquet = [path for path in first if path.endswith(".parquet")]
    assert len(parquet) > 8
    assert {p: sha256s(second)[p] for p in parquet} == {p: sha256s(first)[p] for p in parquet}
    for dataset in ("activities", "participants"):
        assert {p: without_run_details(m) for p, m in manifests(second, dataset).items()} == {
            p: without_run_details(m) for p, m in manifests(first, dataset).items()
        }

    added = {a["uid"] for a in api.add_activities(3, timestamp=NOV_2 + timedelta(hours=10), activity_type="call")}
    run(activities_op(output, output_conn_id=moto_s3.conn_id), NOV_2)  # one file per partition now
    third = contents(s3_root)
    assert sorted(p for p in third if "/activity_date=2026-11-02/part-" in p and p.startswith("activities/")) == [
        f"activities/activity_type={kind}/activity_date=2026-11-02/part-00000.parquet" for kind in ("call", "email", "meeting")
    ]
    assert {p: d for p, d in third.items() if "activity_date=2026-11-02" not in p} == {
        p: d for p, d in second.items() if "activity_date=2026-11-02" not in p
    }
    table = read_dataset(s3_root, "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(api, START, 2)
    assert added <= set(table.column("uid").to_pylist())
    assert_complete_partitions(third, "activities", activity_partitions(START, 2))
    assert staged_keys(moto_s3, s3_root) == []


def test_s3_day_without_data_gets_a_zero_row_file_and_a_manifest(api: Sandbox, moto_s3: MotoS3, s3_root: ObjectStoragePath) -> None:
    quiet = START + 6 * DAY
    output = output_of(s3_root)
    summary = run(participants_op(output, output_conn_id=moto_s3.conn_id), quiet)
    assert summary["rows"] == 0
    listing = contents(s3_root)
    assert_complete_partitions(listing, "participants", participant_partitions(quiet, 1))
    assert [m["rows"] for m in manifests(listing, "participants").values()] == [0]
    found = read_dataset(s3_root, "participants")
    assert found.to_table().num_rows == 0 and "activity_uid" in found.schema.names


class _FailingUploads:
    """Makes the writer's upload of a finished file (``fs.put_file``) fail after ``allowed`` uploads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fs: Any, allowed: int) -> None:
        self.count = 0
        original = fs.put_file

        @functools.wraps(original)
        def put_file(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            if self.count > allowed:
                raise InjectedFailure("injected failure of an upload")
            return original(*args, **kwargs)

        monkeypatch.setattr(fs, "put_file", put_file)


def test_s3_storage_error_while_uploading_leaves_the_previous_partitions_and_a_rerun_succeeds(
    api: Sandbox, moto_s3: MotoS3, s3_root: ObjectStoragePath, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    output = output_of(s3_root)
    run(activities_op(output, output_conn_id=moto_s3.conn_id), START, START + 2 * DAY)
    before = contents(s3_root)
    added = {a["uid"] for a in api.add_activities(4, timestamp=NOV_2 + timedelta(hours=11))}

    spool = tmp_path / "spool"  # where the writer assembles files before uploading them
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    with monkeypatch.context() as patch:
        uploads = _FailingUploads(patch, s3_root.fs, allowed=4)
        with pytest.raises(InjectedFailure):
            run(activities_op(output, output_conn_id=moto_s3.conn_id, max_rows_per_file=30), START, START + 2 * DAY)
    assert uploads.count == 5
    assert list(spool.iterdir()) == []  # the local spool is gone too
    assert contents(s3_root) == before  # the files already uploaded to staging are gone again
    assert staged_keys(moto_s3, s3_root) == []

    run(activities_op(output, output_conn_id=moto_s3.conn_id), START, START + 2 * DAY)
    table = read_dataset(s3_root, "activities").to_table()
    assert activity_uids_by_partition(table) == expected_activity_uids(api, START, 2)
    assert added <= set(table.column("uid").to_pylist())
    assert list(spool.iterdir()) == []


def test_s3_storage_error_while_publishing_leaves_every_partition_as_before_and_a_rerun_succeeds(
    api: Sandbox, moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    def prepared(name: str) -> ObjectStoragePath:
        """A fresh prefix holding a first run of 2026-11-02, in files of 40 rows."""
        root = ObjectStoragePath(f"s3://{moto_s3.bucket}/{name}-{id(api):x}", conn_id=moto_s3.conn_id)
        run(activities_op(output_of(root), output_conn_id=moto_s3.conn_id, max_rows_per_file=40), NOV_2)
        return root

    def rerun(root: ObjectStoragePath) -> None:
        """The run that fails: 2026-11-02 again, with new data, in files of 100 rows (fewer files, other bytes)."""
        run(activities_op(output_of(root), output_conn_id=moto_s3.conn_id, max_rows_per_file=100), NOV_2)

    roots = {"counting": prepared("counting")}
    api.add_activities(3, timestamp=NOV_2 + timedelta(hours=9))
    with monkeypatch.context() as patch:
        counted = FailingOperations(patch, roots["counting"].fs, fail_at=None)
        rerun(roots["counting"])
    calls = counted.calls
    # backups (copies), old _SUCCESS deleted, copies into place, manifests, stale files deleted,
    # _SUCCESS markers, then the removal of staging (after publishing: not a case)
    deletes = [index for index, name in enumerate(calls) if name == "_bulk_delete"]
    pipes = [index for index, name in enumerate(calls) if name == "_pipe_file"]
    assert len(deletes) == 3 and len(pipes) == 6 and calls[0] == "_cp_file", calls
    into_place = (deletes[0] + pipes[0]) // 2
    cases = [deletes[0], into_place, pipes[0], deletes[1], pipes[-1]]

    for fail_at in cases:
        root = prepared(f"case-{fail_at}")
        before = contents(root)
        previous = sorted(read_dataset(root, "activities").to_table().column("uid").to_pylist())
        with monkeypatch.context() as patch:
            FailingOperations(patch, root.fs, fail_at=fail_at)
            with pytest.raises(InjectedFailure):
                rerun(root)
        where = f"failure at storage operation {fail_at} of {calls}"
        assert contents(root) == before, where
        assert staged_keys(moto_s3, root) == [], where
        assert sorted(read_dataset(root, "activities").to_table().column("uid").to_pylist()) == previous, where

        rerun(root)
        table = read_dataset(root, "activities").to_table()
        assert activity_uids_by_partition(table) == expected_activity_uids(api, NOV_2, 1), where
        assert_complete_partitions(contents(root), "activities", activity_partitions(NOV_2, 1))
