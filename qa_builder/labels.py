"""Mentions -> per-report labels in the CheXpert-14 and ChestX-ray14 schemes.

Aggregation (as chexpert-labeler): among a label's current mentions, positive beats uncertain beats
negative. Historical mentions ("history of pneumonia") say nothing about today's image and are skipped.
"No Finding" is 1 when no pathology label is positive or uncertain, else 0 (CheXpert ignores Support
Devices for it, as its labeler does). A label never mentioned has no row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from qa_builder.lexicon import CHESTXRAY14_LABELS, CHEXPERT_LABELS, Lexicon

SCHEMES = ("chexpert", "chestxray14")
_RANK = {"negative": 0, "uncertain": 1, "positive": 2}

_NOT_PATHOLOGY = {"chexpert": {"No Finding", "Support Devices"}, "chestxray14": {"No Finding"}}
_ORDER = {"chexpert": {n: i for i, n in enumerate(CHEXPERT_LABELS)},
          "chestxray14": {n: i for i, n in enumerate(CHESTXRAY14_LABELS)}}


def report_labels(mentions: Iterable[Mapping], lexicon: Lexicon) -> list[tuple[str, str, int]]:
    """(scheme, label, value) rows for one report, in scheme then label-list order."""
    key = tuple([(m["concept"], m["certainty"]) for m in mentions if m["temporality"] == "current"])
    cache = _CACHE.setdefault(lexicon.digest, {})  # keyed like Lexicon.label_targets
    rows = cache.get(key)
    if rows is None:
        rows = _labels(key, lexicon.label_targets)
        if len(cache) < 50_000:  # label sets repeat a lot across reports; bound the memory anyway
            cache[key] = rows
    return list(rows)


# lexicon digest -> {(concept, certainty) of a report's current mentions: its label rows}
_CACHE: dict[str, dict[tuple, tuple[tuple[str, str, int], ...]]] = {}


def _labels(current: tuple[tuple[str, str], ...], targets: Mapping) -> tuple[tuple[str, str, int], ...]:
    best: dict[tuple[str, str], int] = {}  # (scheme, label) -> rank of the strongest certainty
    for concept, certainty in current:
        rank = _RANK[certainty]
        for key in targets.get(concept, ()):
            if best.get(key, -1) < rank:
                best[key] = rank
    rows: list[tuple[str, str, int]] = []
    for scheme in SCHEMES:
        values = {label: _RANK_VALUE[r] for (s, label), r in best.items() if s == scheme}
        abnormal = any(v != 0 for label, v in values.items() if label not in _NOT_PATHOLOGY[scheme])
        values["No Finding"] = 0 if abnormal else 1
        order = _ORDER[scheme]
        rows.extend((scheme, label, values[label]) for label in sorted(values, key=order.__getitem__))
    return tuple(rows)


_RANK_VALUE = {0: 0, 1: -1, 2: 1}
