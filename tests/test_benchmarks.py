"""The benchmark script at a small size, so it cannot rot (issue 7).

Runs ``benchmarks.run`` end to end (sandbox process, every contender in its own process, the
report and the plot) on 3000 records in the CPU-bound regime, and checks that every contender
extracted the same rows. Timings are not checked: they mean nothing at this size.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("dlt", reason="the benchmark's contenders need the bench extra")
pytest.importorskip("pandas", reason="the benchmark's contenders need the bench extra")
pytest.importorskip("matplotlib", reason="the benchmark's plot needs the bench extra")

from benchmarks import run  # noqa: E402
from benchmarks.contenders import CONTENDERS  # noqa: E402

RECORDS = 3000


@pytest.mark.timeout(60)
def test_every_contender_extracts_the_same_rows(tmp_path):
    results = run.main(["--records", str(RECORDS), "--regimes", "cpu", "--out", str(tmp_path), "--no-prime"])

    assert [r.contender for r in results] == list(CONTENDERS)
    failures = {r.contender: r.error for r in results if r.exit_code != 0}
    assert not failures
    assert {r.contender: r.rows for r in results} == {contender: RECORDS for contender in CONTENDERS}
    assert all(r.peak_rss_mb > 0 and r.wall_s > 0 for r in results)

    report = (tmp_path / "latest.md").read_text()
    for contender in CONTENDERS:
        assert f"| {contender} | cpu | {RECORDS:,} | {RECORDS:,} |" in report
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert [r["rows"] for r in saved["results"]] == [RECORDS] * len(CONTENDERS)
    assert (tmp_path / "latest.png").stat().st_size > 0
