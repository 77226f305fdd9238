"""The benchmark script at a small size, so it cannot rot (issue 7).

Runs ``benchmarks.run`` end to end (sandbox process, every contender in its own process, the
report and the plot) on 3000 records in the CPU-bound regime, and checks that every contender,
both transports (``transport``: ``json.loads``; ``transport-arrow``: ``pyarrow.json`` with an
inferred schema) included, extracted the same rows, and that the transport target is taken
against the faster of the two. Timings are not checked: they mean nothing at this size.

Also at small sizes (issue 14): the API-bound regime (the provider with its connection's
defaults, the floor the larger of the rate floor and the CPU-bound transport floor, the
CPU-bound run it needs added at its size) and the backfill scenario (every day exact in each
mode; the shared-budget mode measured when the package has the ``rate_limit_redis_conn_id``
extra, else reported as not measurable).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("dlt", reason="the benchmark's contenders need the bench extra")
pytest.importorskip("pandas", reason="the benchmark's contenders need the bench extra")
pytest.importorskip("matplotlib", reason="the benchmark's plot needs the bench extra")

from benchmarks import run
from benchmarks.contenders import CONTENDERS, TRANSPORTS

RECORDS = 3000


@pytest.mark.timeout(60)
def test_every_contender_extracts_the_same_rows(tmp_path):
    results = run.main(["--records", str(RECORDS), "--regimes", "cpu", "--out", str(tmp_path), "--no-prime"])

    assert set(TRANSPORTS) == {"transport", "transport-arrow"} <= set(CONTENDERS)
    assert [r.contender for r in results] == list(CONTENDERS)
    failures = {r.contender: r.error for r in results if r.exit_code != 0}
    assert not failures
    assert {r.contender: r.rows for r in results} == {contender: RECORDS for contender in CONTENDERS}
    assert all(r.peak_rss_mb > 0 and r.wall_s > 0 for r in results)
    assert {r.contender: r.extra.get("parser") for r in results if r.contender in TRANSPORTS} == {
        "transport": "json",
        "transport-arrow": "arrow",
    }

    report = (tmp_path / "latest.md").read_text()
    for contender in CONTENDERS:
        assert f"| {contender} | cpu | {RECORDS:,} | {RECORDS:,} |" in report
    assert "| / transport (json) | / transport (arrow) |" in report
    floor = min((r for r in results if r.contender in TRANSPORTS), key=lambda r: r.wall_s)
    assert f"the transport floor's wall (the faster transport: `{floor.contender}`)" in report
    assert "for reference (no target): the transports' records/s against naive's" in report

    saved = json.loads((tmp_path / "latest.json").read_text())
    assert [r["rows"] for r in saved["results"]] == [RECORDS] * len(CONTENDERS)
    assert [r["contender"] for r in saved["results"]] == list(CONTENDERS)
    assert saved["transport_floors"] == [
        {"regime": "cpu", "records": RECORDS, "contender": floor.contender, "wall_s": floor.wall_s,
         "records_per_s": floor.records_per_s}
    ]
    assert (tmp_path / "latest.png").stat().st_size > 0


def test_the_transport_floor_is_the_faster_transport_that_extracted_every_row():
    def result(contender, wall_s, rows=100):
        return run.Result(contender=contender, regime="cpu", records=100, rows=rows, wall_s=wall_s, process_s=1.0,
                          cpu_s=1.0, peak_rss_mb=1.0, baseline_rss_mb=1.0)

    assert run.transport_floor([result("transport", 2.0), result("transport-arrow", 1.0)], "cpu", 100).contender == (
        "transport-arrow"
    )
    assert run.transport_floor([result("transport", 1.0), result("transport-arrow", 2.0)], "cpu", 100).contender == (
        "transport"
    )
    # A transport that missed rows is no floor.
    assert run.transport_floor([result("transport", 2.0), result("transport-arrow", 1.0, rows=99)], "cpu", 100).contender == (
        "transport"
    )
    assert run.transport_floor([result("provider", 1.0)], "cpu", 100) is None


def _result(contender, regime, wall_s, records=100, peak_rss_mb=100.0, rows=None):
    return run.Result(contender=contender, regime=regime, records=records, rows=records if rows is None else rows,
                      wall_s=wall_s, process_s=1.0, cpu_s=1.0, peak_rss_mb=peak_rss_mb, baseline_rss_mb=1.0)


def test_the_api_bound_floor_is_the_larger_of_the_rate_floor_and_the_cpu_bound_transport_floor():
    args = run.parse_args(["--api-records", "250000", "--api-max-page", "100000", "--api-rate", "5"])

    # 3 pages of up to 100,000 at 5 requests/s: 0.6 s; the CPU-bound transports took 2.0 and 1.5 s.
    cpu_bound = [_result("transport", "cpu", 2.0, 250_000), _result("transport-arrow", "cpu", 1.5, 250_000)]
    floor = run.api_floor(cpu_bound, args)
    assert (floor.pages, floor.rate_s, floor.cpu_s, floor.cpu_contender) == (3, 0.6, 1.5, "transport-arrow")
    assert (floor.seconds, floor.bound) == (1.5, "CPU")

    # A fast parse: the rate sets the floor. No CPU-bound run: the rate floor alone, and no verdict.
    assert run.api_floor([_result("transport-arrow", "cpu", 0.4, 250_000)], args).bound == "rate"
    assert run.api_floor([_result("transport-arrow", "cpu", 0.4, 250_000)], args).seconds == 0.6
    alone = run.api_floor([_result("transport-arrow", "cpu", 0.4, 100_000)], args)
    assert (alone.cpu_s, alone.seconds) == (None, 0.6)
    checks = run.evaluate([_result("provider", "api", 1.0, 250_000)], args)
    assert [verdict for _, _, verdict in checks] == ["not measured", "**met**", "not measured"]


def test_the_api_bound_targets_are_wall_429s_and_memory_against_the_cpu_bound_run():
    args = run.parse_args(["--api-records", "100", "--api-max-page", "100", "--api-rate", "5"])
    base = [_result("transport-arrow", "cpu", 1.0), _result("provider", "cpu", 1.1, peak_rss_mb=400.0)]

    met = run.evaluate_api([*base, _result("provider", "api", 1.15, peak_rss_mb=480.0)], args, str)
    assert [verdict for _, _, verdict in met] == ["True", "True", "True"]
    assert "1.15 / max(0.20, 1.00) s = 1.15x (CPU-bound floor)" in met[0][1]
    assert met[2][1] == "480 / 400 MB = 1.20x"

    slow = _result("provider", "api", 1.2, peak_rss_mb=481.0)
    slow.server_429s = 1
    assert [verdict for _, _, verdict in run.evaluate_api([*base, slow], args, str)] == ["False", "False", "False"]


@pytest.mark.timeout(120)
def test_the_api_bound_regime_runs_the_provider_with_connection_defaults(tmp_path):
    records = 5000
    results = run.main(["--records", "3000", "--regimes", "api", "--api-records", str(records),
                        "--contenders", "provider,naive,transport-arrow", "--out", str(tmp_path), "--no-prime", "--no-plot"])

    # The CPU-bound run the floor and the memory target need is added at the API-bound size.
    assert [(r.contender, r.regime, r.records) for r in results] == [
        ("provider", "cpu", records), ("transport-arrow", "cpu", records),
        ("provider", "api", records), ("naive", "api", records), ("transport-arrow", "api", records),
    ]
    assert all(r.ok and r.server_429s == 0 for r in results if r.contender != "naive")
    assert all(r.ok for r in results)
    limits = {r.contender: r.extra["limits"] for r in results if r.regime == "api"}
    # No page_size extra: the provider's first (and only) page is the size it starts with, not 1000;
    # the transports ask the largest page the sandbox takes; naive keeps --page-size.
    assert limits["provider"] == {"25000": 1}
    assert limits["transport-arrow"] == {"100000": 1}
    assert limits["naive"] == {"1000": 6}

    report = (tmp_path / "latest.md").read_text()
    floor = run.api_floor(results, run.parse_args(["--api-records", str(records)]))
    assert floor.cpu_s == next(r.wall_s for r in results if (r.contender, r.regime) == ("transport-arrow", "cpu"))
    assert f"API-bound floor at {records:,} records: the larger of the rate floor, 1 page(s) of up to 100,000" in report
    assert f"**{floor.seconds:.2f} s**" in report
    for target in ("connection defaults: provider wall <= 1.15x the floor", "zero 429s received by the provider",
                   f"provider peak RSS <= 1.2x the CPU-bound provider's at {records:,}"):
        assert target in report
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert saved["api_floor"]["seconds"] == floor.seconds
    assert saved["api_floor"]["max_page"] == 100_000


@pytest.mark.timeout(180)
def test_the_backfill_scenario_runs_every_day_exactly_in_each_mode(tmp_path):
    from benchmarks import backfill

    days = 3
    run.main(["--regimes", "backfill", "--backfill-days", str(days), "--backfill-records", "500",
              "--backfill-workers", "2", "--out", str(tmp_path), "--no-plot"])

    saved = json.loads((tmp_path / "latest.json").read_text())["backfill"]
    assert saved["days"] == days and saved["records"] == sum(saved["day_counts"].values()) > 0
    runs = {entry["mode"]: entry for entry in saved["runs"]}
    assert list(runs) == list(backfill.MODES)
    assert (runs["serial"]["workers"], runs["unshared"]["workers"], runs["shared"]["workers"]) == (1, 2, 2)
    unsupported = backfill.shared_budget_supported()
    assert runs["shared"]["measured"] is (unsupported is None)
    for mode, entry in runs.items():
        if not entry["measured"]:
            assert entry["note"] == unsupported
            continue
        assert entry["exact"] and entry["days_exact"] == days, (mode, entry["errors"])
        assert entry["rows"] == entry["expected_rows"] == saved["records"]
        assert entry["requests"] >= days and entry["wall_s"] > 0
    if runs["shared"]["measured"]:
        assert runs["shared"]["server_429s"] == 0
        assert runs["shared"]["max_arrivals_per_second"] <= 5
    report = (tmp_path / "latest.md").read_text()
    assert f"## Backfill: {days} daily intervals" in report
    assert "| pool of 1: one worker, one day at a time | 1 |" in report


def test_the_benchmark_sandbox_serves_pages_from_its_record_cache():
    """The benchmark's sandbox builds every page from records encoded once, as the plain sandbox would.

    Whatever the page sizes, its pages are the plain sandbox's bytes. Its pages once silently fell
    back to the plain sandbox's bounded page cache, which made every benchmark above 100,000
    records bound by the sandbox.
    """
    from datetime import datetime, timezone

    import requests

    from airflow_provider_activities.testing.sandbox import Sandbox
    from benchmarks.sandbox_server import BLOCK, BenchSandbox

    start = datetime(2026, 11, 2, tzinfo=timezone.utc)
    settings = dict(seed=3, activities=2 * BLOCK + 500, start=start, days=1, rate_limit=None)
    with BenchSandbox(**settings) as bench, Sandbox(**settings) as plain:
        for offset, limit in [(0, 700), (700, 2000), (2700, 100)]:
            pages = []
            for sandbox in (bench, plain):
                session = requests.Session()
                token = session.post(sandbox.base_url + "/auth/v1/tokens", data={
                    "grant_type": "client_credentials", "client_id": sandbox.client_id,
                    "client_secret": sandbox.client_secret}).json()["access_token"]
                answer = session.get(sandbox.base_url + "/v0/public/activities", headers={"Authorization": f"Bearer {token}"},
                                     params={"from": "2026-11-02", "to": "2026-11-02", "offset": offset, "limit": limit})
                pages.append(answer.content)
            assert pages[0] == pages[1]
        assert len(bench._pages._blocks) == 3  # three blocks of records encoded, each once
