"""`qa-review diff OLD NEW`: what a rule change did, pair by pair and sentence by sentence.

Two builds of the same reports are compared by review key (keys.py: report, question type, concept or
region, side), so a reworded template is no change; answers by the review's answer comparison. Mentions
are compared per distinct sentence (concept, certainty, attributes and the hedge fields), which is how a
parser rule is checked over every sentence of a corpus for changes nobody meant.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from .keys import AnswerRules, KeyReader
from .score import build_templates, read_build
from .sheet import ReviewError

_MENTION_FIELDS = ("concept", "certainty", "laterality", "location", "severity", "descriptor", "size", "change",
                   "temporality", "differential", "qualifier", "explanation", "probable")


def diff_builds(old: Path, new: Path, n: int = 10, seed: int = 0, qtype: str | None = None) -> dict[str, Any]:
    """Counts per question type (removed, added, changed), `n` seeded examples of each, and the distinct
    sentences whose mentions changed."""
    old, new = Path(old), Path(new)
    language, extra = build_templates(new)
    reader = KeyReader.for_config(language, extra)
    rules = AnswerRules.for_config(language, extra)
    a, _, _ = read_build(old, reader)
    b, _, _ = read_build(new, reader)
    counts: dict[str, Counter] = {}
    examples: dict[str, list] = {"removed": [], "added": [], "changed": []}
    for key in sorted(a.keys() | b.keys()):
        if qtype is not None and key.question_type != qtype:
            continue
        x, y = a.get(key), b.get(key)
        if x is not None and y is not None and rules.same_answer(y.answer, x.answer, key.question_type):
            continue
        kind = "removed" if y is None else "added" if x is None else "changed"
        counts.setdefault(key.question_type, Counter())[kind] += 1
        examples[kind].append((key, x.answer if x else None, y.answer if y else None, (y or x).question))
    rng = random.Random(seed)
    for kind, rows in examples.items():
        examples[kind] = sorted(rng.sample(rows, min(n, len(rows))), key=lambda r: r[0])
    sentences = _mention_changes(old, new)
    return {"counts": counts, "examples": examples, "sentences": sentences,
            "sentences_changed": len(sentences)}


def _mention_changes(old: Path, new: Path) -> list[tuple[str, list, list]]:
    import pyarrow.parquet as pq

    def table(out: Path):
        path = out / "findings.parquet"
        if not path.exists():
            raise ReviewError(f"{path}: missing; run qa-build first")
        return pq.read_table(path)

    ta, tb = table(old), table(new)
    # fields both builds have: a build from before a column existed differs only where values do
    fields = [f for f in _MENTION_FIELDS if f in ta.column_names and f in tb.column_names]

    def by_sentence(table) -> dict[str, frozenset]:
        found: dict[str, set] = {}
        for r in table.select(["sentence", *fields]).to_pylist():
            found.setdefault(r["sentence"], set()).add(tuple(r[f] for f in fields))
        return {s: frozenset(v) for s, v in found.items()}

    a, b = by_sentence(ta), by_sentence(tb)
    out = []
    for s in sorted(a.keys() | b.keys()):
        x, y = a.get(s, frozenset()), b.get(s, frozenset())
        if x != y:
            out.append((s, sorted(x - y, key=str), sorted(y - x, key=str)))
    return out


def format_diff(result: dict[str, Any], sentences: int = 20) -> str:
    lines = ["pairs by review key: removed / added / changed answer"]
    for qtype in sorted(result["counts"]):
        c = result["counts"][qtype]
        lines.append(f"  {qtype:<12}{c['removed']:>8,}{c['added']:>8,}{c['changed']:>8,}")
    if not result["counts"]:
        lines.append("  (no pair changed)")
    for kind, rows in result["examples"].items():
        if rows:
            lines.append(f"\n{kind} (sample):")
            for key, x, y, question in rows:
                lines.append(f"  {key.report_id} {key.question_type} {key.label()}: {x!r} -> {y!r}   [{question}]")
    lines.append(f"\ndistinct sentences whose mentions changed: {result['sentences_changed']:,}")
    for s, gone, came in result["sentences"][:sentences]:
        lines.append(f"  {s}")
        lines += [f"    - {' '.join(str(v) for v in m if v not in (None, False))}" for m in gone]
        lines += [f"    + {' '.join(str(v) for v in m if v not in (None, False))}" for m in came]
    return "\n".join(lines)
