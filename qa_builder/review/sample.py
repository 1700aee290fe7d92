"""`qa-review sample`: a stratified, seeded sample of a build's pairs for review.

N is spread as evenly as the types allow (a type with fewer candidates gives its share to the
others); within a type the pairs with the smallest blake2b(seed, qa_id) are taken, so the choice
does not depend on row order and the same input and seed give the same sheet.
"""

from __future__ import annotations

from hashlib import blake2b
from pathlib import Path
from typing import Any, Iterable, Mapping

from qa_builder.qa.generate import QUESTION_TYPES

from .keys import Key, KeyReader
from .score import build_templates, row_key
from .sheet import ReviewError, duplicate_keys, read_sheet

# Fine types plus region: the coarse answers are the report's own sections, little to review.
DEFAULT_TYPES = tuple(t for t, (g, _) in QUESTION_TYPES.items() if g == "fine" or t == "region")
_COLUMNS = ["qa_id", "report_id", "granularity", "question_type", "question", "answer", "concept", "region",
            "evidence", "evidence_text"]
_KEY_COLUMNS = ["qa_id", "report_id", "question_type", "question", "concept", "region"]


def allocate(n: int, available: Mapping[str, int]) -> dict[str, int]:
    """n spread evenly over the types (in the mapping's order), capped by what each has; what a
    small type cannot take goes to the others; the first types get the remainder."""
    alloc = {t: 0 for t in available}
    left = n
    while left > 0:
        open_types = [t for t in available if alloc[t] < available[t]]
        if not open_types:
            break
        share, extra = divmod(left, len(open_types))
        for i, t in enumerate(open_types):
            give = min(share + (i < extra), available[t] - alloc[t])
            alloc[t] += give
            left -= give
    return alloc


def _rank(seed: int, qa_id: str) -> bytes:
    return blake2b(f"{seed}\x1f{qa_id}".encode(), digest_size=8).digest()


def excluded_keys(sheets: Iterable[str | Path], reader: KeyReader) -> set[Key]:
    """Keys of earlier sheets, reviewed or not: a pair already sent out is not sampled again."""
    return {r.key for sheet in sheets for r in read_sheet(sheet, reader)}


def sample(out: str | Path, n: int, seed: int = 0, types: Iterable[str] | None = None,
           exclude: Iterable[str | Path] = ()) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
    """(sheet rows in qa.parquet order, sampled per type, candidates per type)."""
    import pyarrow.parquet as pq

    out = Path(out)
    types = tuple(types or DEFAULT_TYPES)
    unknown = [t for t in types if t not in QUESTION_TYPES]
    if unknown:
        raise ReviewError(f"unknown question type(s) {', '.join(unknown)}; known: {', '.join(QUESTION_TYPES)}")
    path = out / "qa.parquet"
    if not path.exists():
        raise ReviewError(f"{path}: missing; run qa-build first")
    reader = KeyReader.for_config(*build_templates(out))
    skip = excluded_keys(exclude, reader)
    filters = [("question_type", "in", list(types))]
    # Keys from the few short columns first (column lists, not a dict per row: tables run to millions
    # of rows); the full rows are read for the chosen pairs only.
    light = pq.read_table(path, columns=_KEY_COLUMNS, filters=filters)
    cols = {c: light.column(c).to_pylist() for c in _KEY_COLUMNS}
    keys = [row_key(reader, dict(zip(_KEY_COLUMNS, values))) for values in zip(*cols.values())]
    # A key the build asks twice cannot be told apart in a sheet: leave it out.
    ambiguous = set(duplicate_keys(k for k in keys if k is not None))
    by_type: dict[str, list[int]] = {t: [] for t in types}
    for pos, key in enumerate(keys):
        if key is not None and key not in skip and key not in ambiguous:
            by_type[key.question_type].append(pos)
    available = {t: len(c) for t, c in by_type.items()}
    counts = allocate(n, available)
    chosen: list[int] = []
    for t, positions in by_type.items():
        positions.sort(key=lambda i: _rank(seed, cols["qa_id"][i]))
        chosen += positions[:counts[t]]
    chosen.sort()  # the build's order: a report's pairs side by side
    full = pq.read_table(path, columns=_COLUMNS, filters=filters).take(chosen).to_pylist()
    return [_sheet_row(keys[i], r) for i, r in zip(chosen, full)], counts, available


def _sheet_row(key: Key, r: Mapping[str, Any]) -> dict[str, Any]:
    return {"report_id": r["report_id"], "granularity": r["granularity"], "question_type": r["question_type"],
            "concept": r["concept"] or "", "question": r["question"], "answer": r["answer"],
            "verdict": "", "corrected_answer": "", "category": "", "note": "",
            "region": r["region"] or "", "side": key.side, "qa_id": r["qa_id"],
            "evidence_text": r["evidence_text"] or "", "evidence": list(r["evidence"] or ())}
