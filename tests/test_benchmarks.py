"""The benchmark script at a small size, so it cannot rot (issue 7).

Runs ``benchmarks.run`` end to end (sandbox process, every contender in its own process, the
report and the plot) on 3000 records in the CPU-bound regime, and checks that every contender,
both transports (``transport``: ``json.loads``; ``transport-arrow``: ``pyarrow.json`` with an
inferred schema) included, extracted the same rows, and that the transport target is taken
against the faster of the two. Timings are not checked: they mean nothing at this size.
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
