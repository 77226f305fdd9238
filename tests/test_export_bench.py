"""The export regime of the benchmark at a small size, so it cannot rot (issue 16).

Runs ``python -m benchmarks.run --regimes export`` end to end (the export server process, each
contender in its own process, the report) on 2,000 records over 2 days, and checks that every
contender landed every record, that the provider's partitions matched the sandbox's ground truth,
and that the report names the targets. Timings are not checked: they mean nothing at this size.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pandas", reason="the naive export contender needs the bench extra")

from benchmarks import export_bench, run

RECORDS = 2000


@pytest.mark.timeout(300)
def test_every_export_contender_lands_every_record_and_the_provider_is_exact(tmp_path):
    argv = ["--regimes", "export", "--export-records", str(RECORDS), "--export-days", "2", "--export-flat-days", "1",
            "--out", str(tmp_path), "--export-cache", str(tmp_path / "cache"), "--no-prime"]
    assert run.main(argv) == []

    saved = json.loads((tmp_path / "export-latest.json").read_text())
    results = {(r["contender"], r["days"]): r for r in saved["results"]}
    assert set(results) == {("provider", 2), ("naive", 2), ("floor", 2), ("provider", 1)}
    assert all(r["ok"] and r["exit_code"] == 0 for r in results.values())
    assert [results[(c, 2)]["rows"] for c in export_bench.CONTENDERS] == [RECORDS] * 3
    assert results[("provider", 2)]["extra"]["exact"] is True
    assert results[("provider", 2)]["extra"]["partitions_checked"] == 2
    assert results[("provider", 1)]["records"] == RECORDS // 2
    assert saved["files"][0]["records"] == RECORDS and saved["files"][0]["file_bytes"] > 0

    report = (tmp_path / "export-latest.md").read_text()
    assert f"| provider | {RECORDS:,} | 2 | {RECORDS:,} |" in report
    assert "provider wall <= 1.5x the floor's" in report
    assert "provider records/s >= 5.0x naive's" in report
    assert "the provider's partitions are exact" in report
    assert "provider peak RSS <= 1.25x a 1-day run's" in report
    assert not (tmp_path / "latest.md").exists()  # the other regimes' report is left alone
