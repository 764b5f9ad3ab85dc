"""The semantic cache's parts without a server: the index over real SQLite (search, cap,
TTL, delete, reload), the prompt split and partitions, tool-call answers, the embeddings
answer parser, and the settings that stop the start."""

from __future__ import annotations

import base64
import json
import random
import struct

import pytest

from flaregate.cache.semantic.embeddings import _vector
from flaregate.cache.semantic.guard import features
from flaregate.cache.semantic.index import Partition, SqlSemanticIndex, shortlist
from flaregate.cache.semantic.layer import EmbeddingFailed
from flaregate.cache.semantic.prompt import PLACEHOLDER, has_tool_calls, split_prompt
from flaregate.cache.semantic.vectors import normalise, quantise, sign_code
from flaregate.config import ConfigError, settings_from_vars
from flaregate.hosts.local.storage import SqliteStorage
from flaregate.providers.mock import bag_of_words


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


def _entry(text: str) -> tuple[str, str, str]:
    unit = normalise(bag_of_words(text))
    assert unit is not None
    return format(sign_code(unit), "x"), quantise(unit).hex(), json.dumps(features(text).to_json())


@pytest.fixture
def index(tmp_path):
    storage = SqliteStorage(tmp_path / "x.sqlite3")
    clock = Clock()
    yield SqlSemanticIndex(storage, clock), clock, storage
    storage.close()


def _add(ix: SqlSemanticIndex, partition: str, entry_id: str, text: str, expires: float = 2000.0,
         cap: int = 100) -> None:
    code, vector, feats = _entry(text)
    ix.add(partition, entry_id, code, vector, feats, expires, cap)


def _search(ix: SqlSemanticIndex, partition: str, text: str, threshold: float = 0.5) -> list[str]:
    code, vector, _ = _entry(text)
    return [m["id"] for m in ix.search(partition, code, vector, 16, threshold)["matches"]]


def test_search_finds_the_nearest_in_its_partition_only(index):
    ix, _, _ = index
    _add(ix, "p1", "a", "what is the capital city of france")
    _add(ix, "p1", "b", "how do i bake a chocolate cake")
    _add(ix, "p2", "c", "what is the capital city of france")
    assert _search(ix, "p1", "what is the capital city of france please") == ["a"]
    assert _search(ix, "p3", "what is the capital city of france") == []


def test_expired_entries_are_never_answered_and_the_cap_drops_the_oldest(index):
    ix, clock, _ = index
    _add(ix, "p", "old", "tell me a joke about cats", expires=1500.0)
    clock.t = 1600.0
    assert _search(ix, "p", "tell me a joke about cats") == []
    for i in range(5):
        _add(ix, "p", f"e{i}", f"tell me a joke about dogs number {i}", cap=3)
    found = _search(ix, "p", "tell me a joke about dogs number", threshold=0.1)
    assert set(found) == {"e2", "e3", "e4"}  # the expired one and the two oldest are gone


def test_delete_and_reload_from_sqlite(index, tmp_path):
    ix, clock, storage = index
    _add(ix, "p", "a", "how tall is mount everest")
    _add(ix, "p", "b", "how tall is the eiffel tower")
    ix.delete("p", "a")
    storage.commit()
    again = SqlSemanticIndex(storage, clock)  # a restart: the codes come back from the file
    assert _search(again, "p", "how tall is mount everest", threshold=0.1) == ["b"]
    with pytest.raises(ValueError):
        again.call("nope", {})


def test_the_prompt_split_keeps_everything_but_the_last_user_text():
    body = {"model": "m", "temperature": 0, "messages": [{"role": "system", "content": "terse"},
                                                          {"role": "user", "content": "hi there"}]}
    text, rest = split_prompt(body, "chat")  # type: ignore[misc]
    assert text == "hi there" and rest["messages"][-1]["content"] == PLACEHOLDER
    assert rest["messages"][0] == body["messages"][0] and rest["temperature"] == 0
    assert body["messages"][-1]["content"] == "hi there"  # the request itself is untouched
    parts = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                      {"type": "image_url", "image_url": {}}]}]}
    assert split_prompt(parts, "chat") is None  # an image: exact cache only
    tool_turn = {"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]}
    assert split_prompt(tool_turn, "chat") is None
    assert split_prompt({"model": "m", "input": "hello"}, "responses") == ("hello", {"model": "m", "input": PLACEHOLDER})
    assert split_prompt({"model": "m", "input": "x"}, "embeddings") is None


def test_tool_call_answers_are_recognised():
    assert has_tool_calls({"choices": [{"message": {"tool_calls": [{"id": "1"}]}, "finish_reason": "tool_calls"}]})
    assert has_tool_calls({"output": [{"type": "function_call", "name": "f"}]})
    assert not has_tool_calls({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]})


def test_embedding_answers_are_parsed_or_refused():
    floats = [0.5, -0.25, 1.0]
    assert _vector(json.dumps({"data": [{"embedding": floats}], "usage": {"prompt_tokens": 3}}).encode()) == (floats, 3)
    b64 = base64.b64encode(struct.pack("<3f", *floats)).decode()
    assert _vector(json.dumps({"data": [{"embedding": b64}]}).encode()) == (floats, 0)
    for bad in (b"nope", b"{}", b'{"data": []}', b'{"data": [{"embedding": "!!"}]}',
                b'{"data": [{"embedding": [true]}]}', b'{"data": [{"embedding": []}]}'):
        with pytest.raises(EmbeddingFailed):
            _vector(bad)


@pytest.mark.parametrize(("semantic", "field"), [
    ({"threshold": 0}, "threshold"), ({"threshold": 1.5}, "threshold"), ({"threshold": "x"}, "threshold"),
    ({"embeddings": "nowhere"}, "semantic_cache.embeddings"), ({"max_entries": 0}, "max_entries"),
    ({"thresold": 0.8}, "thresold"),
])
def test_bad_semantic_settings_stop_the_start_naming_the_field(semantic, field):
    routes = {"chat": {"targets": ["mock"], "semantic_cache": semantic}}
    with pytest.raises(ConfigError, match=field):
        settings_from_vars({"FLAREGATE_ROUTES": json.dumps(routes)})


def test_embedded_model_on_a_host_without_one_stops_the_start():
    from tests.unit.test_gateway import build

    routes = {"mock-1": {"targets": ["mock"], "semantic_cache": {"embeddings": "embedded"}}}
    with pytest.raises(ConfigError, match="semantic"):  # these ports have no index, no model (the Worker's case)
        build({"FLAREGATE_ROUTES": json.dumps(routes)})
    assert build()[0].caching.semantic is None  # off by default: nothing built


def test_codes_made_anew_in_a_row_keep_their_values_and_order(index):
    """The partition remakes its codes (for the scan's memory locality) every few hundred
    adds and on load: the same ints, in the same order, and the same search answers."""
    ix, _, storage = index
    texts = [f"question {i} about topic {i % 7} and item {i * 13 % 101}" for i in range(700)]
    for i, text in enumerate(texts):
        _add(ix, "p", f"e{i}", text, cap=10_000)
    expected = [int(_entry(t)[0], 16) for t in texts]
    part = ix._partition("p")
    assert part.codes == expected and part.ids == [f"e{i}" for i in range(700)]
    before = _search(ix, "p", texts[123])
    part.compact()
    assert part.codes == expected and _search(ix, "p", texts[123]) == before and "e123" in before
    reloaded = SqlSemanticIndex(storage, Clock())
    assert reloaded._partition("p").codes == expected


@pytest.mark.parametrize("seed", range(6))
def test_column_scan_gives_the_exact_distances_and_radius(seed):
    """The byte-column scan answers what XOR and ``bit_count`` over the ints answer, for every
    entry and radius: with removals, duplicates of the query, and its exact complement (256
    bits apart, the one distance a byte cannot hold), and with a wider code in the partition."""
    rng = random.Random(seed)
    full = (1 << 256) - 1
    query = rng.getrandbits(256)
    part, live = Partition(), {}
    for i in range(rng.randint(50, 400)):
        roll = rng.random()
        code = (query ^ full if roll < 0.05 else query if roll < 0.08
                else query ^ (rng.getrandbits(256) & rng.getrandbits(256) & rng.getrandbits(256)))
        part.append(f"e{i}", code, 10.0 if i % 9 == 0 else 1e12)
        live[f"e{i}"] = (code, 10.0 if i % 9 == 0 else 1e12)
    for entry_id in rng.sample(sorted(live), len(live) // 10):
        assert part.remove(entry_id)
        del live[entry_id]
    order = [e for e in part.ids]
    assert list(part.distances(query)) == [min(255, (live[e][0] ^ query).bit_count()) for e in order]
    if seed % 2:  # a code wider than the columns: the scan reads the ints, with the same answers
        part.append("wide", 1 << 300, 1e12)
        order.append("wide")
        live["wide"] = (1 << 300, 1e12)
    for within in (0, 40, 73, 128, 254, 255, 256, 400):
        expected = [e for e in order if (live[e][0] ^ query).bit_count() <= within and live[e][1] > 100.0]
        assert shortlist(part, query, 10**6, 100.0, within) == expected
        nearest = shortlist(part, query, 5, 100.0, within)
        distance = {e: (live[e][0] ^ query).bit_count() for e in expected}
        assert sorted(distance[e] for e in nearest) == sorted(distance.values())[:len(nearest)]
