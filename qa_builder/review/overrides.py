"""`qa-build --overrides SHEET`: a review sheet's verdicts applied inside the build.

Applied per report in the worker, right after the generator made its rows, so the output stays the
same whatever the worker count. Each batch also reports the build's own (pre-override) answer for
every reviewed key it saw: the parent merges those (`merge_tally`) and scores the build as it would
have been without the sheet (`finish`), then the data card shows both that score and what the
sheet changed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from qa_builder.qa.schema import QA_COLUMNS

from .keys import AnswerRules, Key, KeyReader
from .score import Built, score
from .sheet import ReviewRow, duplicate_keys, read_sheet

_QA_ID, _RID, _QTYPE, _QUESTION, _ANSWER, _CONCEPT, _REGION = (
    QA_COLUMNS.index(c) for c in ("qa_id", "report_id", "question_type", "question", "answer", "concept", "region"))
APPLIED = ("dropped", "corrected", "confirmed")


class Overrides:
    """The reviewed rows of one sheet, by key (a later row of the same key wins)."""

    def __init__(self, path: str | Path, language: str = "en", extra_templates: tuple[str, ...] = ()):
        self.path = str(path)
        self.reader = KeyReader.for_config(language, extra_templates)
        self.rules = AnswerRules.for_config(language, extra_templates)
        self.rows: list[ReviewRow] = [r for r in read_sheet(path, self.reader) if r.reviewed]
        self.sha256 = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        self.by_key: dict[Key, ReviewRow] = {r.key: r for r in self.rows}
        self.reports = frozenset(k.report_id for k in self.by_key)

    def apply(self, pairs: list[tuple], tally: dict[str, Any]) -> list[tuple]:
        """One report's rows (QA_COLUMNS tuples) with the sheet applied; records into `tally`."""
        if not pairs or pairs[0][_RID] not in self.reports:
            return pairs
        out: list[tuple] = []
        keys: list[Key] = []
        for row in pairs:
            key = self._key(row)
            review = self.by_key.get(key) if key is not None else None
            if review is None:
                out.append(row)
                continue
            keys.append(key)
            tally["found"][key] = Built(row[_ANSWER], row[_QUESTION], row[_QA_ID])
            if review.drop:
                tally["applied"]["dropped"] += 1
                tally["dropped_by_type"][key.question_type] += 1
                continue
            # An answer the comparison calls the same (a reordered list, a region answer trimmed
            # to its region) is kept: writing the sheet's text back would undo rule improvements.
            # A row reviewed as awkward whose corrected answer only repeats the flawed one ("perihilar"
            # where "hilar" was wanted) is kept as built too: the rules may have fixed its wording.
            if self.rules.same_answer(row[_ANSWER], review.expected, key.question_type) or review.reworded_only:
                tally["applied"]["confirmed"] += 1
                out.append(row)
            else:
                tally["applied"]["corrected"] += 1
                out.append(row[:_ANSWER] + (review.expected,) + row[_ANSWER + 1:])
        tally["build_duplicates"].extend(duplicate_keys(keys))
        if len(out) < len(pairs):  # qa_id = report_id:position, contiguous from 0 as the generator makes them
            rid = pairs[0][_RID]
            out = [(f"{rid}:{i}",) + row[1:] for i, row in enumerate(out)]
        return out

    def _key(self, row: tuple) -> Key | None:
        qtype = row[_QTYPE]
        try:
            return self.reader.key(row[_RID], qtype, concept=row[_CONCEPT], question=row[_QUESTION],
                                   region=row[_REGION] if qtype == "region" else None)
        except ValueError:
            return None


def empty_tally() -> dict[str, Any]:
    return {"found": {}, "applied": Counter(), "dropped_by_type": Counter(), "build_duplicates": []}


def merge_tally(into: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    into["found"].update(part["found"])
    into["applied"].update(part["applied"])
    into["dropped_by_type"].update(part["dropped_by_type"])
    into["build_duplicates"].extend(part["build_duplicates"])
    return into


def finish(overrides: Overrides, tally: Mapping[str, Any], written_type_rows: Mapping[str, int]) -> dict[str, Any]:
    """manifest.json's `overrides` block: the file, its sha256, the counts and the pre-override score."""
    # The build without the sheet had the written rows plus the ones the sheet dropped.
    type_rows = Counter(written_type_rows)
    type_rows.update(tally["dropped_by_type"])
    result = score(overrides.rows, tally["found"], overrides.rules, dict(type_rows), tally["build_duplicates"])
    applied = {name: tally["applied"][name] for name in APPLIED}
    applied["not_found"] = sum(k not in tally["found"] for k in overrides.by_key)
    total = result["total"]
    counts = {"reviewed": len(overrides.by_key), "applied": applied,
              **{k: total[k] for k in ("as_corrected", "trimmed", "different", "reworded", "lost", "dropped",
                                         "still_asked")}}
    return {"file": overrides.path, "sha256": overrides.sha256, "counts": counts, "score": result}
