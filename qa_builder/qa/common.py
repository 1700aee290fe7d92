"""Small helpers every question family uses: sides, text cleaning, evidence, paraphrase choice."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

BOTH = frozenset({"left", "right"})
NO_SIDE: frozenset[str] = frozenset()
SIDES = {"left": frozenset({"left"}), "right": frozenset({"right"}), "bilateral": BOTH}
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # odd multiplier: spreads (report hash ^ key hash) over the high bits


def sides(lat: Any) -> frozenset[str]:
    return SIDES.get(lat, NO_SIDE)


def clean(text: Any) -> str | None:
    """Collapse whitespace (MIMIC hard-wraps at 80 columns); empty -> None (never '')."""
    if text is None:
        return None
    s = str(text)
    if "\n" in s or "  " in s or "\t" in s or "\r" in s or s[:1].isspace() or s[-1:].isspace():
        s = " ".join(s.split())
    return s or None


def evidence(ms: Sequence[Mapping]) -> tuple[list[int], str]:
    """(sorted mention ids, their sentences in report order) of a non-empty mention list.

    Same as sorted({ids}) and " ".join(sentence per sentence id, last one wins, by id), with the
    one- and two-mention cases (most calls) done without comprehensions or sorting.
    """
    n = len(ms)
    if n == 1:
        m = ms[0]
        return [m["mention_id"]], m["sentence"]
    if n == 2:
        a, b = ms
        ia, ib = a["mention_id"], b["mention_id"]
        sa, sb = a["sentence_id"], b["sentence_id"]
        ids = [ia] if ia == ib else [ia, ib] if ia < ib else [ib, ia]
        if sa == sb:
            return ids, b["sentence"]
        return ids, (a["sentence"] + " " + b["sentence"]) if sa < sb else (b["sentence"] + " " + a["sentence"])
    mids = set()
    add = mids.add
    by_sid = {}
    for m in ms:
        add(m["mention_id"])
        by_sid[m["sentence_id"]] = m["sentence"]
    if len(by_sid) == 1:
        return sorted(mids), " ".join(by_sid.values())
    return sorted(mids), " ".join([by_sid[s] for s in sorted(by_sid)])


def choice(entry: tuple[tuple[str, ...], int, int], base: int) -> str:
    """The paraphrase of a (variants, key hash, number of variants) entry for the report hash `base`.
    (The same expression is inlined in the per-pair loops.)"""
    variants, kh, n = entry
    return variants[((((base ^ kh) * GOLDEN) & MASK64) >> 32) % n]


def distinct(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


# Values that can key a cache: equal values of other types (1 / 1.0 / True) may print differently.
PLAIN_TYPES = frozenset({str, type(None)})
