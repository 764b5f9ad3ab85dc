"""The benchmark's result maths and table on canned numbers (the bench itself is not a test)."""

import pytest
from bench import summary

TARGETS = [
    {"id": "direct", "label": "direct → mock", "baseline": None},
    {"id": "fg-miss", "label": "Flaregate, cache miss", "baseline": "direct"},
    {"id": "fg-hit", "label": "Flaregate, cache hit", "baseline": "direct"},
    {"id": "portkey-miss", "label": "Portkey 1.0", "baseline": "direct"},
]


def run(target, conns, p50, p99, rps, cpu=None, **extra):
    return {"target": target, "connections": conns, "p50_ms": p50, "p90_ms": (p50 + p99) / 2, "p99_ms": p99,
            "rps": rps, "cpu_s_per_1k": cpu, "requests": int(rps * 5), "non_2xx": 0, "socket_errors": 0, **extra}


RUNS = [
    # three repeats each; the medians are the middle values
    run("direct", 1, 0.05, 0.20, 15000), run("direct", 1, 0.04, 0.10, 16000), run("direct", 1, 0.09, 0.30, 9000),
    run("fg-miss", 1, 0.50, 2.00, 1500, 0.40), run("fg-miss", 1, 0.45, 2.50, 1600, 0.30),
    run("fg-miss", 1, 0.60, 9.00, 1200, 0.50),
    run("fg-hit", 1, 0.15, 1.50, 5000, 0.15), run("fg-hit", 1, 0.16, 2.50, 4800, 0.16),
    run("fg-hit", 1, 0.14, 1.90, 5100, 0.17),
    run("direct", 16, 0.40, 2.00, 30000), run("fg-miss", 16, 5.00, 20.0, 3100, 0.30),
    run("portkey-miss", 16, 30.0, 120.0, 400, 1.50),
]


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert summary.percentile(values, 50) == 50.0
    assert summary.percentile(values, 99) == 99.0
    assert summary.percentile(values, 100) == 100.0
    assert summary.percentile([7.0], 99.9) == 7.0
    assert summary.percentile([], 50) is None


def test_latency_summary_converts_seconds_to_milliseconds():
    assert summary.latency_summary([0.003, 0.001, 0.002], "ttfb_") == {
        "ttfb_p50_ms": 2.0, "ttfb_p90_ms": 3.0, "ttfb_p99_ms": 3.0}


def test_medians_overhead_and_ratio():
    rows = summary.summarise(RUNS, TARGETS, [1, 16])
    miss1 = summary.find(rows, "fg-miss", 1)
    assert miss1["repeats"] == 3 and miss1["requests"] == 5 * (1500 + 1600 + 1200)
    assert miss1["p50_ms"] == 0.50 and miss1["p99_ms"] == 2.50 and miss1["rps"] == 1500
    assert miss1["cpu_s_per_1k"] == 0.40
    # overhead against the median baseline at the same percentile (direct p50 0.05, p99 0.20)
    assert miss1["overhead_p50_ms"] == pytest.approx(0.45)
    assert miss1["overhead_p99_ms"] == pytest.approx(2.30)
    assert miss1["ratio_p50"] == pytest.approx(10.0)
    direct1 = summary.find(rows, "direct", 1)
    assert direct1["overhead_p50_ms"] is None and direct1["ratio_p50"] is None
    assert summary.find(rows, "fg-hit", 16) is None  # never measured: no row


def test_cpu_per_thousand_requests():
    assert summary.cpu_per_1k(1.5, 3000) == pytest.approx(0.5)
    assert summary.cpu_per_1k(1.0, 0) is None


def test_target_checks_compare_against_the_issue_goals():
    checks = {c["target"]: c for c in summary.target_checks(summary.summarise(RUNS, TARGETS, [1, 16]))}
    assert checks["cache-miss overhead p50, 1 connection"]["met"] is True
    assert checks["cache-miss overhead p99, 1 connection"]["met"] is True  # 2.30 < 3
    assert checks["cache-hit p99, 1 connection"]["met"] is True and checks["cache-hit p99, 1 connection"]["measured"] == 1.90
    assert checks["cache-miss req/s, 16 connections"]["met"] is True
    cpu = checks["CPU per request vs Portkey (cache miss, 16 conns)"]
    assert cpu["measured"] == pytest.approx(0.2) and cpu["met"] is True
    without_portkey = summary.target_checks(summary.summarise(RUNS[:-1], TARGETS, [1, 16]))
    assert without_portkey[-1]["met"] is None


def test_markdown_table_rendering():
    rows = summary.summarise(RUNS, TARGETS, [1, 16])
    table = summary.render_table(rows, {"flaregate": 57.6}, {"fg-miss": "flaregate", "fg-hit": "flaregate"})
    lines = table.strip().splitlines()
    assert lines[0].startswith("| target | conns | p50 ms")
    assert set(lines[1]) <= {"|", "-"} and lines[1].count("|") == lines[0].count("|")
    assert len(lines) == 2 + len(rows)
    miss = next(line for line in lines if line.startswith("| Flaregate, cache miss | 1 |"))
    assert "| 0.50 | 1.48 | 2.50 | 1,500 | 0.45 / 2.30 | 10.0× |" in miss and miss.endswith("| 0.40 | 58 |")
    assert "| direct → mock | 16 | 0.40 |" in table and "baseline" in table
    checks = summary.render_checks(summary.target_checks(rows))
    assert "| cache-miss req/s, 16 connections | >= 3000 | 3,100 | met |" in checks


def test_number_formatting():
    assert summary.fmt(None) == "–"
    assert summary.fmt(0.04) == "0.04"
    assert summary.fmt(153.4) == "153"
    assert summary.fmt(14500.2) == "14,500"
