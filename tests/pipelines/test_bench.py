from __future__ import annotations

import json

from tests.pipelines.test_generate import _cli

FIELDS = {"policy", "cache", "gen_length", "batch_size", "accuracy", "nfe", "tpf", "tokens_per_s", "overhead_frac",
          "peak_mem_mb"}


def test_bench_decode_quick_emits_json(tmp_path):
    png = tmp_path / "pareto.png"
    out = _cli("bench", "decode", "--quick", "--gen-lengths", "64", "--batch-sizes", "7", "--n-per-task", "1",
               "--json", "--plot", str(png), "--markdown", str(tmp_path / "b.md"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["device"].startswith("cpu")
    rows = report["results"]
    assert {(r["policy"], r["cache"]) for r in rows} == {
        ("low_confidence", "none"), ("low_confidence", "dual"), ("threshold", "none"), ("threshold", "dual")}
    for r in rows:
        assert FIELDS <= set(r) and 0 <= r["accuracy"] <= 1 and 0 <= r["token_accuracy"] <= 1
        assert r["nfe"] > 0 and 0 <= r["overhead_frac"] < 1
        assert abs(r["tpf"] - 64 / r["nfe"]) < 1e-6
    base = next(r for r in rows if r["policy"] == "low_confidence" and r["cache"] == "none")
    fast = next(r for r in rows if r["policy"] == "threshold" and r["cache"] == "none")
    assert fast["nfe"] < base["nfe"]
    assert png.stat().st_size > 10_000
    table = (tmp_path / "b.md").read_text()
    assert "unmask bench decode --quick" in table and table.count("| threshold | dual | 64 | 7 |") == 1


def test_bench_decode_names_unknown_grid_entries():
    out = _cli("bench", "decode", "--quick", "--policies", "fastest", "--n-per-task", "1")
    assert out.returncode == 2 and "unknown bench policy ['fastest']" in out.stderr and "adaptive_block" in out.stderr


def test_bench_decode_fixed_tpf_rows_for_random_shapes(tmp_path):
    png = tmp_path / "speed.png"
    out = _cli("bench", "decode", "--model", "random:llada-tiny", "--gen-lengths", "64", "--batch-sizes", "2",
               "--n-per-task", "1", "--policies", "low_confidence,threshold", "--caches", "none",
               "--fixed-tpf", "1", "4", "--json", "--plot", str(png))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["results"]
    lc = sorted((r["steps"], r["nfe"], r["tpf"]) for r in rows if r["policy"] == "low_confidence")
    # a random model never ends early, so the step budget alone sets NFE and TPF
    assert lc == [(16, 16.0, 4.0), (64, 64.0, 1.0)]
    assert [r["steps"] for r in rows if r["policy"] == "threshold"] == [64]  # adaptive policies run once
    assert png.stat().st_size > 10_000
    bad = _cli("bench", "decode", "--model", "random:llada-tiny", "--gen-lengths", "64", "--fixed-tpf", "3",
               "--n-per-task", "1", "--quick")
    assert bad.returncode == 2 and "--fixed-tpf [3] does not divide gen length 64" in bad.stderr
