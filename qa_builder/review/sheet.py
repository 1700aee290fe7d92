"""The review sheet: one CSV row per reviewed pair.

The clinician's columns come first (REVIEW_COLUMNS, as in dev_qa_review.csv); a sampled sheet adds
EXTRA_COLUMNS so that its keys do not depend on reading region names back from the question.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .keys import Key, KeyReader, normalise

REVIEW_COLUMNS = ("report_id", "granularity", "question_type", "concept", "question", "answer", "verdict",
                  "corrected_answer", "category", "note")
EXTRA_COLUMNS = ("region", "side", "qa_id", "evidence_text")
REQUIRED_COLUMNS = ("report_id", "question_type", "question", "answer", "verdict", "corrected_answer")
VERDICTS = ("correct", "wrong", "unsupported", "trivial", "awkward")
DROP = "DROP"


class ReviewError(ValueError):
    """A sheet that cannot be used; the message is one line naming the file (and row)."""


@dataclass(frozen=True)
class ReviewRow:
    row: int          # 1-based data row of the sheet (the header is not a row)
    key: Key
    granularity: str
    question: str
    answer: str       # the answer the reviewer saw
    verdict: str      # "" = not reviewed yet
    corrected: str    # corrected_answer as written: an answer, DROP or "" (= the answer was right)
    category: str = ""
    note: str = ""

    @property
    def reviewed(self) -> bool:
        return bool(self.verdict)

    @property
    def drop(self) -> bool:
        """This question should not be asked of this report (a trivial pair is not worth asking)."""
        return self.corrected == DROP or self.verdict == "trivial"

    @property
    def expected(self) -> str | None:
        return None if self.drop else (self.corrected or self.answer)

    @property
    def reworded_only(self) -> bool:
        """An awkward row whose expected answer is its own answer (corrected_answer repeats it or is
        empty): the content was right, the wording bad, and the sheet does not say the better wording."""
        return self.verdict == "awkward" and not self.drop and normalise(self.expected) == normalise(self.answer)

    @property
    def right_at_review(self) -> bool:
        """What the build had when the sheet was made: the reviewed answer was the right one."""
        return self.verdict == "correct" or (not self.drop and self.expected.strip() == self.answer.strip())


def read_sheet(path: str | Path, reader: KeyReader) -> list[ReviewRow]:
    """Every row of a sheet, reviewed or not (blank lines skipped). Raises ReviewError."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets save a BOM
            table = csv.DictReader(fh)
            records = list(table)
            columns = [c.strip() for c in table.fieldnames or ()]
    except OSError as exc:
        raise ReviewError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ReviewError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise ReviewError(f"{path}: not a CSV file ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ReviewError(f"{path}: not a review sheet: missing column(s) {', '.join(missing)}")
    rows = []
    for i, rec in enumerate(records, 1):
        rec = {(k or "").strip(): v for k, v in rec.items() if isinstance(v, str)}
        get = lambda name: (rec.get(name) or "").strip()  # noqa: E731  (short rows: missing cells read as "")
        if not any(get(c) for c in columns):
            continue
        rows.append(_row(path, i, get, reader))
    return rows


def _row(path: Path, i: int, get, reader: KeyReader) -> ReviewRow:
    where = f"{path}: row {i}"
    if not get("report_id"):
        raise ReviewError(f"{where}: missing report_id")
    verdict = get("verdict").lower()
    if verdict and verdict not in VERDICTS:
        raise ReviewError(f"{where}: unknown verdict {get('verdict')!r} (one of {', '.join(VERDICTS)})")
    corrected = get("corrected_answer")
    if verdict in ("wrong", "unsupported") and not corrected:
        raise ReviewError(f"{where}: verdict {verdict} needs a corrected_answer (the right answer or {DROP})")
    try:
        key = reader.key(get("report_id"), get("question_type"), concept=get("concept"), question=get("question"),
                         region=get("region"), side=get("side"))
    except ValueError as exc:
        raise ReviewError(f"{where}: {exc}") from None
    return ReviewRow(row=i, key=key, granularity=get("granularity"), question=get("question"),
                     answer=get("answer"), verdict=verdict, corrected=corrected, category=get("category"),
                     note=get("note"))


def duplicate_keys(keys: Iterable[Key]) -> list[Key]:
    """Keys seen more than once, in first-seen order."""
    seen: set[Key] = set()
    dups: dict[Key, None] = {}
    for k in keys:
        if k in seen:
            dups[k] = None
        seen.add(k)
    return list(dups)


def write_sheet(rows: Iterable[Mapping[str, str]], path: str | Path) -> None:
    """REVIEW_COLUMNS then EXTRA_COLUMNS; '\\n' line ends so the same rows give the same bytes everywhere."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(REVIEW_COLUMNS + EXTRA_COLUMNS)
        for r in rows:
            w.writerow(["" if r.get(c) is None else str(r.get(c)) for c in REVIEW_COLUMNS + EXTRA_COLUMNS])
