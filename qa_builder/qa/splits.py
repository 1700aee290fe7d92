"""Patient-level, deterministic train/validate/test splits.

A report's split comes from, in order:
1. the official split file (MIMIC's ``mimic-cxr-2.0.0-split.csv``) by study id, else by subject id;
2. a stable hash of (seed, subject id), falling back to the report id when the subject is unknown
   (then the split is report-level: IU X-ray has no patient ids).
Stable means hashlib, never Python's per-process salted ``hash()``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Mapping

SPLITS: tuple[str, str, str] = ("train", "validate", "test")
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)

# Spellings seen in split files, normalised to the qa.parquet vocabulary.
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validate": "validate", "validation": "validate", "valid": "validate", "val": "validate",
    "dev": "validate",
    "test": "test", "testing": "test",
}


def stable_hash(*parts: object) -> int:
    """64-bit hash of the parts, identical across processes, machines and Python versions."""
    key = "\x1f".join(map(str, parts)).encode("utf-8")
    return int.from_bytes(_blake2b(key, digest_size=8).digest(), "big")


_blake2b = hashlib.blake2b


def unit_interval(*parts: object) -> float:
    """Stable hash mapped to [0, 1)."""
    return stable_hash(*parts) / 18446744073709551616.0  # 2**64


def check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    """Validate (train, validate, test) fractions and normalise them to sum to 1."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers (train, validate, test), got {fractions!r}")
    total = float(sum(fractions))
    return (fractions[0] / total, fractions[1] / total, fractions[2] / total)


@lru_cache(maxsize=1 << 17)  # MIMIC has 65k patients; reports of one patient hit the cache
def assign_split(subject_id: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0) -> str:
    """Split of a patient from a stable hash of (seed, subject id)."""
    train, validate, _ = check_fractions(tuple(fractions))
    u = unit_interval("split", seed, subject_id)
    if u < train:
        return "train"
    if u < train + validate:
        return "validate"
    return "test"


def normalize_study_id(value: object) -> str:
    """'s50414267', '50414267' and 50414267 all become '50414267'."""
    s = str(value).strip()
    if s[:1] in ("s", "S") and s[1:].isdigit():
        s = s[1:]
    if s.endswith(".0") and s[:-2].isdigit():  # ids that went through a float column
        s = s[:-2]
    return s


def normalize_subject_id(value: object) -> str:
    """'p10000032', '10000032' and 10000032 all become '10000032'."""
    s = str(value).strip()
    if s[:1] in ("p", "P") and s[1:].isdigit():
        s = s[1:]
    if s.endswith(".0") and s[:-2].isdigit():
        s = s[:-2]
    return s


class SplitMap(dict):
    """study_id -> split (a plain dict), plus ``by_subject`` for studies the file does not list."""

    def __init__(self, by_study: Mapping[str, str], by_subject: Mapping[str, str]):
        super().__init__(by_study)
        self.by_subject: dict[str, str] = dict(by_subject)


def load_split_file(path: str | Path) -> SplitMap:
    """Read an official split CSV (or .csv.gz): MIMIC's ``dicom_id, study_id, subject_id, split``,
    one row per image.

    Also accepts ``report_id`` or ``study`` instead of ``study_id``. Ids are normalised
    (``s5041...`` -> ``5041...``). A study listed with two different splits is an error.
    """
    by_study: dict[str, str] = {}
    by_subject: dict[str, str] = {}
    opener = gzip.open if str(path).endswith(".gz") else open  # PhysioNet ships the .csv.gz
    with opener(path, "rt", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        split_col = cols.get("split")
        study_col = cols.get("study_id") or cols.get("study") or cols.get("report_id")
        subject_col = cols.get("subject_id")
        if split_col is None or (study_col is None and subject_col is None):
            raise ValueError(f"{path}: a split file needs a `split` column and `study_id` (or `subject_id`); got {reader.fieldnames}")
        for row in reader:
            raw = (row.get(split_col) or "").strip().lower()
            split = _SPLIT_ALIASES.get(raw)
            if split is None:
                raise ValueError(f"{path}: unknown split {raw!r} (expected one of {SPLITS})")
            if study_col is not None and row.get(study_col):
                study = normalize_study_id(row[study_col])
                if by_study.setdefault(study, split) != split:
                    raise ValueError(f"{path}: study {study} is listed in two splits")
            if subject_col is not None and row.get(subject_col):
                # First split seen wins; MIMIC's file is patient-disjoint, so there is only one.
                by_subject.setdefault(normalize_subject_id(row[subject_col]), split)
    return SplitMap(by_study, by_subject)


def split_for_report(
    report_id: str,
    subject_id: str | None,
    study_id: str | None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    split_map: SplitMap | None = None,
) -> str:
    """The split of one report (see module docstring for the order of precedence)."""
    if split_map is not None:
        for key in (study_id, report_id):
            if key is not None:
                hit = split_map.get(normalize_study_id(key))
                if hit is not None:
                    return hit
        if subject_id is not None:
            hit = split_map.by_subject.get(normalize_subject_id(subject_id))
            if hit is not None:
                return hit
    return assign_split(subject_id if subject_id is not None else report_id, tuple(fractions), seed)
