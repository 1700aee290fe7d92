"""CheXpert-14 labels from report mentions, with the CheXpert labeler's aggregation rules.

Per label: any positive mention -> 1.0; else any uncertain -> -1.0; else negative -> 0.0;
never mentioned -> blank. No Finding is 1.0 when no label other than Support Devices is positive
or uncertain, and blank otherwise (never 0.0), as in mimic-cxr-2.0.0-chexpert.csv.
"""
from __future__ import annotations

from .spec import CHEXPERT_LABELS, chexpert_of

VALUE = {"positive": 1.0, "uncertain": -1.0, "negative": 0.0}
_PRIORITY = {1.0: 2, -1.0: 1, 0.0: 0}


def chexpert_labels(spec: dict, mentions) -> dict[str, float | None]:
    """mentions: iterable of (concept, certainty). Returns label -> 1.0/0.0/-1.0/None."""
    labels: dict[str, float | None] = {name: None for name in CHEXPERT_LABELS}
    for concept, certainty in mentions:
        label = chexpert_of(spec, concept)
        if label is None:
            continue
        value = VALUE[certainty]
        current = labels[label]
        if current is None or _PRIORITY[value] > _PRIORITY[current]:
            labels[label] = value
    finding = any(v in (1.0, -1.0) for k, v in labels.items() if k not in ("No Finding", "Support Devices"))
    labels["No Finding"] = None if finding else 1.0
    return labels


def csv_value(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"
