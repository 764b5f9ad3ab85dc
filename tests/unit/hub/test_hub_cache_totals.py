"""The hub's cache savings totals, including on a table created before they existed."""

from flaregate.hub.aggregator import MetricsHub
from tests.support.fakes import FakeClock, MemorySql, RecordingBroadcaster, RecordingScheduler

OLD_SCHEMA = ("CREATE TABLE hub_minute (bucket INTEGER NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,"
              " requests INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,"
              " cache_hits INTEGER NOT NULL DEFAULT 0, cache_misses INTEGER NOT NULL DEFAULT 0,"
              " rate_limited INTEGER NOT NULL DEFAULT 0, tokens_in INTEGER NOT NULL DEFAULT 0,"
              " tokens_out INTEGER NOT NULL DEFAULT 0, latency_sum_ms REAL NOT NULL DEFAULT 0,"
              " PRIMARY KEY (bucket, provider, model))")


def hub(sql):
    return MetricsHub(sql, FakeClock(), RecordingBroadcaster(), RecordingScheduler())


async def test_bytes_and_tokens_saved_add_up_on_an_upgraded_table():
    sql = MemorySql()
    sql.exec(OLD_SCHEMA)
    sql.exec("INSERT INTO hub_minute (bucket, provider, model, requests) VALUES (0, 'p', 'm', 3)")
    metrics = hub(sql)
    hub(sql)  # a second start finds the columns already there
    await metrics.record([{"status": 200, "cache": "HIT", "bytes_saved": 120, "tokens_saved": 9},
                          {"status": 200, "cache": "MISS", "bytes_saved": 30, "tokens_saved": 2},
                          {"status": 200, "cache": "HIT", "bytes_saved": -5, "tokens_saved": "lots"}])
    totals = metrics.snapshot()["totals"]
    assert totals["requests"] == 6 and totals["cache_hits"] == 2
    assert totals["cache_bytes_saved"] == 150 and totals["cache_tokens_saved"] == 11
