"""Evaluate the semantic cache's match rule on the frozen labelled set (bench/data).

    .venv/bin/python -m bench.semantic_eval [--json]

With the embedded default model (WordLlama, the local extra), every pair's cosine and its
guard verdict are computed once. On the ``tune`` half, the threshold is the lowest one at
which false hits stay <= 1% of near misses (the rule the default comes from); the ``held_out``
half is then reported at that threshold: false hits (near misses answered) and paraphrase
recall (paraphrases answered), the curve (threshold vs both, held out), and each guard
rule's effect (the guard without that rule, and that rule alone). Real figures, not timing.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

from flaregate.cache.semantic.guard import RULES, disagreement, features
from flaregate.hosts.local.static_embedder import StaticEmbedder

DATA = Path(__file__).parent / "data" / "semantic_pairs.jsonl"
MAX_FALSE_HITS = 0.01
RECALL_FLOOR = 0.70
THRESHOLDS = [round(0.01 * i, 2) for i in range(100)]


@dataclass(frozen=True)
class Pair:
    id: str
    kind: str
    hit: bool
    split: str
    cosine: float
    blocked_by: frozenset[str]  # every guard rule on which the two prompts disagree


def unrelated(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Near misses derived from the frozen set by a fixed rule, no new labels: each
    paraphrased question against the first paraphrase of the next question in the file
    (another topic, nothing the guard sees must differ: only the threshold stops them)."""
    bases: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["kind"] == "paraphrase":
            bases.setdefault(row["a"], row)
    firsts = list(bases.values())
    return [{"id": f"unrelated-{i:03d}", "kind": "unrelated", "label": "miss", "split": ("tune" if i % 2 == 0 else "held_out"),
             "a": row["a"], "b": firsts[(i + 1) % len(firsts)]["b"]} for i, row in enumerate(firsts)]


def load_pairs() -> list[Pair]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    rows += unrelated(rows)
    embedder = StaticEmbedder()
    pairs = []
    for row in rows:
        va, vb = embedder.embed_now([row["a"], row["b"]])
        fa, fb = features(row["a"]), features(row["b"])
        blocked = frozenset(rule for rule in RULES if disagreement(fa, fb, (rule,)))
        pairs.append(Pair(row["id"], row["kind"], row["label"] == "hit", row["split"],
                          sum(x * y for x, y in zip(va, vb, strict=True)), blocked))
    return pairs


def rates(pairs: list[Pair], threshold: float, rules: tuple[str, ...] = RULES) -> tuple[float, float, int, int]:
    """(false-hit rate over near misses, recall over paraphrases, false hits, hits)."""
    def answered(p: Pair) -> bool:
        return p.cosine >= threshold and not (p.blocked_by & set(rules))
    misses = [p for p in pairs if not p.hit]
    hits = [p for p in pairs if p.hit]
    false = sum(answered(p) for p in misses)
    true = sum(answered(p) for p in hits)
    return false / len(misses), true / len(hits), false, true


def upper_bound(false: int, n: int, confidence: float = 0.95) -> float:
    """The one-sided upper confidence bound of a rate seen as ``false`` of ``n`` (exact,
    Clopper-Pearson; for 0 of n it is 1 - 0.05^(1/n), about 3/n): what 0 false hits of a
    held-out half can and cannot promise."""
    if n == 0 or false >= n:
        return 1.0
    lo, hi = false / n, 1.0
    for _ in range(60):  # bisect P(X <= false | rate) = 1 - confidence
        mid = (lo + hi) / 2
        tail = sum(math.comb(n, k) * mid ** k * (1 - mid) ** (n - k) for k in range(false + 1))
        lo, hi = (mid, hi) if tail > 1 - confidence else (lo, mid)
    return hi


def tune(pairs: list[Pair], rules: tuple[str, ...] = RULES) -> float:
    """The highest threshold that keeps RECALL_FLOOR of the paraphrases with false hits <=
    1% (a margin over the guard: near misses it was not written for meet a higher score);
    when none does, the lowest that keeps false hits <= 1%."""
    allowed = [t for t in THRESHOLDS if rates(pairs, t, rules)[0] <= MAX_FALSE_HITS]
    if not allowed:
        return THRESHOLDS[-1]
    kept = [t for t in allowed if rates(pairs, t, rules)[1] >= RECALL_FLOOR]
    return max(kept) if kept else min(allowed)


def evaluate() -> dict[str, object]:
    pairs = load_pairs()
    tuning = [p for p in pairs if p.split == "tune"]
    held = [p for p in pairs if p.split == "held_out"]
    threshold = tune(tuning)

    def report(rules: tuple[str, ...], at: float) -> dict[str, object]:
        fh, recall, false, true = rates(held, at, rules)
        return {"threshold": at, "false_hit_rate": round(fh, 4), "recall": round(recall, 4),
                "false_hits": false, "true_hits": true}

    held_misses = sum(not p.hit for p in held)
    result: dict[str, object] = {
        "pairs": len(pairs), "tune": len(tuning), "held_out": len(held),
        "held_out_paraphrases": len(held) - held_misses, "held_out_near_misses": held_misses,
        "threshold": threshold, "held_out_result": report(RULES, threshold),
        "tune_result": {k: v for k, v in zip(("false_hit_rate", "recall", "false_hits", "true_hits"),
                                             rates(tuning, threshold), strict=True)},
        # The frozen set alone (without the derived unrelated-topic pairs), held out.
        "held_out_frozen_only": report(RULES, threshold) | dict(zip(
            ("false_hit_rate", "recall", "false_hits", "true_hits"),
            (round(x, 4) if isinstance(x, float) else x
             for x in rates([p for p in held if p.kind != "unrelated"], threshold)), strict=True)),
        "held_out_false_hit_upper_bound_95": round(upper_bound(rates(held, threshold)[2], held_misses), 4),
        # The guard's rules each: without it (tuned again on the tune half: the fair comparison)
        # and alone; and no guard at all.
        "no_guard": report((), tune(tuning, ())),
        "no_guard_at_threshold": report((), threshold),
        "without_rule": {rule: report(tuple(r for r in RULES if r != rule), threshold) for rule in RULES},
        "without_rule_retuned": {rule: report(tuple(r for r in RULES if r != rule),
                                              tune(tuning, tuple(r for r in RULES if r != rule)))
                                 for rule in RULES},
        "rule_alone": {rule: report((rule,), threshold) for rule in RULES},
        "curve": [{"threshold": t, **{k: v for k, v in report(RULES, t).items() if k != "threshold"},
                   "no_guard_false_hit_rate": round(rates(held, t, ())[0], 4)} for t in THRESHOLDS[30::5]],
        "held_out_false_hits": [p.id for p in held if not p.hit and p.cosine >= threshold and not p.blocked_by],
        "held_out_false_hits_by_kind": {kind: sum(1 for p in held if p.kind == kind and not p.hit
                                                  and p.cosine >= threshold and not p.blocked_by)
                                        for kind in sorted({p.kind for p in held if not p.hit})},
        "paraphrases_blocked_by_guard": {rule: sum(1 for p in held if p.hit and rule in p.blocked_by)
                                         for rule in RULES},
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = parser.parse_args()
    result = evaluate()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    held = result["held_out_result"]
    assert isinstance(held, dict)
    print(f"{result['pairs']} pairs; tuned on {result['tune']}, reported on {result['held_out']} held out "
          f"({result['held_out_paraphrases']} paraphrases, {result['held_out_near_misses']} near misses)")
    print(f"threshold (tuned): {result['threshold']}")
    print(f"held out: false hits {held['false_hits']} ({held['false_hit_rate']:.2%} of near misses), "
          f"recall {held['true_hits']} ({held['recall']:.2%} of paraphrases)")
    frozen = result["held_out_frozen_only"]
    tuned = result["tune_result"]
    assert isinstance(frozen, dict) and isinstance(tuned, dict)
    print(f"held out, 95% upper bound on the false-hit rate: {result['held_out_false_hit_upper_bound_95']:.2%}")
    print(f"held out, the frozen pairs only (no derived unrelated pairs): false hits {frozen['false_hits']} "
          f"({frozen['false_hit_rate']:.2%}), recall {frozen['recall']:.2%}")
    print(f"tune half at the same threshold: false hits {tuned['false_hits']} ({tuned['false_hit_rate']:.2%}), "
          f"recall {tuned['recall']:.2%}")
    for name in ("no_guard", "no_guard_at_threshold"):
        r = result[name]
        assert isinstance(r, dict)
        print(f"{name:>24}: t={r['threshold']} false {r['false_hit_rate']:.2%} recall {r['recall']:.2%}")
    for section in ("without_rule", "without_rule_retuned", "rule_alone"):
        print(section)
        table = result[section]
        assert isinstance(table, dict)
        for rule, r in table.items():
            print(f"  {rule:>10}: t={r['threshold']} false {r['false_hit_rate']:.2%} recall {r['recall']:.2%}")
    print("curve (held out): threshold, false hits, recall, false hits without the guard")
    curve = result["curve"]
    assert isinstance(curve, list)
    for row in curve:
        print(f"  {row['threshold']:.2f}  {row['false_hit_rate']:.2%}  {row['recall']:.2%}  "
              f"{row['no_guard_false_hit_rate']:.2%}")
    print("paraphrases the guard blocks (held out), by rule:", result["paraphrases_blocked_by_guard"])
    print("held-out false hits:", result["held_out_false_hits"])


if __name__ == "__main__":
    main()
