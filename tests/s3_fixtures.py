"""A real S3 API for tests: moto's server on loopback, reached through an Airflow ``aws`` connection.

Import the fixtures into a test module (``from tests.s3_fixtures import moto_s3  # noqa: F401``).
:func:`moto_s3` starts ``moto.server.ThreadedMotoServer`` on ``127.0.0.1`` and a free port once
per session, creates the bucket :data:`BUCKET`, and sets ``AIRFLOW_CONN_AWS_MOTO`` so that
``ObjectStoragePath("s3://<bucket>/...", conn_id="aws_moto")`` reaches it. The amazon provider's
``s3`` filesystem (``airflow/providers/amazon/aws/fs/s3.py``) builds its ``S3FileSystem`` with
``endpoint_url=S3Hook.conn_config.get_service_endpoint_url("s3")``, which reads ``endpoint_url``
from the connection's extras. :func:`s3_root` gives each test its own fresh prefix.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from moto.server import ThreadedMotoServer

from airflow_provider_activities.compat import ObjectStoragePath

BUCKET = "peopleai-test-lake"
CONN_ID = "aws_moto"
_ACCESS_KEY = "testing-access-key"
_SECRET_KEY = "testing-secret-key"
_REGION = "us-east-1"


@dataclass(frozen=True)
class MotoS3:
    """The running server.

    :param endpoint_url: ``http://127.0.0.1:<port>``.
    :param bucket: the bucket created for the session.
    :param conn_id: the Airflow connection id pointing at the server.
    """

    endpoint_url: str
    bucket: str
    conn_id: str

    def client(self):
        """A boto3 S3 client for the server (to inspect objects directly in tests)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=_ACCESS_KEY,
            aws_secret_access_key=_SECRET_KEY,
            region_name=_REGION,
        )

    def keys(self, prefix: str) -> list[str]:
        """Every object key below ``prefix``, sorted."""
        found: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """A moto S3 server on loopback with one bucket and the ``aws_moto`` Airflow connection."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint_url = f"http://{host}:{port}"
    connection = {
        "conn_type": "aws",
        "login": _ACCESS_KEY,
        "password": _SECRET_KEY,
        "extra": {"endpoint_url": endpoint_url, "region_name": _REGION},
    }
    env_name = f"AIRFLOW_CONN_{CONN_ID.upper()}"
    previous = os.environ.get(env_name)
    os.environ[env_name] = json.dumps(connection)
    moto = MotoS3(endpoint_url=endpoint_url, bucket=BUCKET, conn_id=CONN_ID)
    try:
        moto.client().create_bucket(Bucket=BUCKET)
        yield moto
    finally:
        if previous is None:
            os.environ.pop(env_name, None)
        else:
            os.environ[env_name] = previous
        server.stop()


@pytest.fixture
def s3_root(moto_s3: MotoS3) -> ObjectStoragePath:
    """A fresh, empty ``s3://`` prefix on the moto server for one test."""
    return ObjectStoragePath(f"s3://{moto_s3.bucket}/t-{uuid.uuid4().hex[:12]}", conn_id=moto_s3.conn_id)
