"""The sync hook's transport: a ``requests.Session`` that reads the environment once per
origin, and the capped readers of answer bodies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests

from airflow_provider_activities.api.config import EnvironmentProxies
from airflow_provider_activities.api.protocol import ApiRequest

DOWNLOAD_CHUNK_BYTES = 1 << 20
READ_CHUNK_BYTES = 1 << 20  # a page of 1000 records in one or two reads


def body_chunks(answer: requests.Response) -> Iterator[bytes]:
    """The body of a download, in chunks, as it crossed the wire when it is ``Content-Encoding:
    gzip``: the sink inflates it itself and so sees a gzip stream cut short, which urllib3's
    decoder lets pass silently (a truncated body would then look complete up to its last whole
    line). Other encodings are undone by the transport.
    """
    encoding = (answer.headers.get("Content-Encoding") or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return answer.raw.stream(DOWNLOAD_CHUNK_BYTES, decode_content=False)
    return answer.iter_content(DOWNLOAD_CHUNK_BYTES)


def without_query(err: requests.RequestException, request: ApiRequest) -> BaseException:
    """``err`` with the query string of a pre-signed URL (a credential: ``Signature=...``) cut
    out of its message: ``requests`` names the whole URL in connection errors, and the message
    ends up in logs and in the final error.
    """
    url = request.absolute_url
    query = urlsplit(url).query if url else ""
    text = str(err)
    if not query or query not in text:
        return err
    try:
        clean = type(err)(text.replace(query, "<signed query omitted>"))
    except Exception:  # an exception class with another constructor
        clean = requests.ConnectionError(text.replace(query, "<signed query omitted>"))
    return clean


def read_capped(answer: requests.Response, cap: int) -> bytes:
    """The body, read in chunks; reading stops once it passes ``cap`` bytes (the call flow then
    refuses the answer), so an endless or oversized body never fills memory.
    """
    chunks: list[bytes] = []
    size = 0
    for chunk in answer.iter_content(chunk_size=READ_CHUNK_BYTES):
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            break
    if len(chunks) == 1:
        return chunks[0]
    body = b"".join(chunks)
    chunks.clear()  # the pieces go before the body is parsed, not when this frame ends
    return body


class Session(requests.Session):
    """A ``requests.Session`` that reads the environment once per origin, not on every request.

    With ``trust_env`` on, ``requests`` scans every environment variable and looks for
    ``~/.netrc`` on each request: a third of the client's CPU for a page. Here ``trust_env`` is
    off and the same settings come from a per-origin cache: the proxies of ``HTTPS_PROXY``,
    ``HTTP_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (for redirects too), and the CA bundle of
    ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` while verification is on (``verify=False``
    wins, unlike in ``requests``). ``~/.netrc`` is not read: its credentials would replace the
    hook's bearer token.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self.environment_proxies = EnvironmentProxies()
        self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        proxies = {**self.environment_proxies.for_url(url), **(proxies or {})}
        if self._ca_bundle and (verify is True or (verify is None and self.verify is True)):
            verify = self._ca_bundle
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

    def rebuild_proxies(self, prepared_request: Any, proxies: Any) -> dict[str, str]:
        merged = dict(proxies or {})
        for scheme, proxy in self.environment_proxies.for_url(prepared_request.url).items():
            merged.setdefault(scheme, proxy)
        return super().rebuild_proxies(prepared_request, merged)
