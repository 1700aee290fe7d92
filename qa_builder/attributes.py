"""Attach attribute words (laterality, location, severity, descriptor, size, change) to findings.

Rule, measured on coordinations such as "left basilar atelectasis and right upper lobe opacity" and
"bilateral effusions, left greater than right": a word inside a finding span belongs to it; otherwise it
belongs to the nearest finding on its right when that one is close and no comma or clause break lies
between (pre-modifier), else to the nearest finding on its left in the same clause (post-modifier,
"effusion on the left", "cardiomegaly, unchanged").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from spacy.attrs import LOWER
from spacy.strings import hash_string
from spacy.tokens import Doc

GROUPS = ("laterality", "location", "severity", "descriptor", "size", "change")
_CLAUSE_BREAKS = frozenset({";", ":", "but", "however", "whereas", "while", "although", "though", "which"})
# The rules below read tokens as LOWER hashes (Doc.to_array): no Python Token object per word.
_CLAUSE_BREAK_IDS = frozenset(map(hash_string, _CLAUSE_BREAKS))
_COMMA_ID = hash_string(",")
_PRE_MAX = 5    # tokens between a pre-modifier and its finding
_POST_MAX = 8   # tokens between a finding and a post-modifier
_SIZE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*(?:x|×|by)\s*(\d+(?:\.\d+)?))?(?:\s*(?:x|×|by)\s*(\d+(?:\.\d+)?))?"
    r"\s*(mm|cm|millimeters?|centimeters?)\b",
    re.IGNORECASE,
)


@dataclass(slots=True)
class Modifier:
    group: str      # one of GROUPS
    value: str      # canonical value ("left", "upper lobe", "8 mm")
    start: int      # token offsets in the sentence doc
    end: int


def find_sizes(doc: Doc, text: str | None = None) -> list[Modifier]:
    """Size modifiers ("8 mm", "2 x 3 cm"); `text`: the doc's text when the caller has it (Doc.text
    rebuilds it from every token)."""
    out = []
    for m in _SIZE.finditer(doc.text if text is None else text):
        span = doc.char_span(m.start(), m.end(), alignment_mode="expand")
        if span is None:
            continue
        unit = "mm" if m.group(4).lower().startswith("m") else "cm"
        dims = " x ".join(d for d in m.groups()[:3] if d)
        out.append(Modifier("size", f"{dims} {unit}", span.start, span.end))
    return out


def size_in_mm(size: str | None) -> float | None:
    """Largest dimension in millimetres of a canonical size string ("2.5 x 3 cm" -> 30.0)."""
    if not size:
        return None
    *dims, unit = size.replace(" x ", " ").split()
    try:
        largest = max(float(d) for d in dims)
    except ValueError:
        return None
    return largest * (10.0 if unit == "cm" else 1.0)


def _breaks_between(lower: list[int], a: int, b: int) -> tuple[bool, bool]:
    """(clause break, comma) among tokens [a, b); `lower`: the tokens' LOWER hashes."""
    between = lower[a:b]
    return not _CLAUSE_BREAK_IDS.isdisjoint(between), _COMMA_ID in between


def _choose(lower: list[int], findings: list[tuple[int, int]], mod: Modifier) -> int | None:
    for i, (s, e) in enumerate(findings):
        if s <= mod.start and mod.end <= e:
            return i
    right = next((i for i, (s, _) in enumerate(findings) if s >= mod.end), None)
    left = next((i for i in range(len(findings) - 1, -1, -1) if findings[i][1] <= mod.start), None)
    if right is not None:
        gap = findings[right][0] - mod.end
        clause, comma = _breaks_between(lower, mod.end, findings[right][0])
        if gap <= _PRE_MAX and not clause and not comma:
            return right
    if left is not None:
        gap = mod.start - findings[left][1]
        clause, _ = _breaks_between(lower, findings[left][1], mod.start)
        if gap <= _POST_MAX and not clause:
            return left
    if right is not None:
        clause, _ = _breaks_between(lower, mod.end, findings[right][0])
        if findings[right][0] - mod.end <= _POST_MAX and not clause:
            return right
    # A sentence-final change word ("..., unchanged from the prior study") is about the sentence's subject.
    if mod.group == "change" and left is not None and not _breaks_between(lower, findings[0][1], mod.start)[0]:
        return 0
    return None


def attach_modifiers(doc: Doc, findings: list[tuple[int, int]], modifiers: list[Modifier],
                     lower: list[int] | None = None) -> list[dict]:
    """One dict of attribute values per finding span (token offsets), in the order given.
    `lower`: the doc's LOWER hashes when the caller has them (`doc.to_array(LOWER).tolist()`)."""
    if lower is None:
        lower = doc.to_array(LOWER).tolist()
    collected: list[dict[str, list[tuple[int, str]]]] = [{g: [] for g in GROUPS} for _ in findings]
    # Longest modifier first so "left greater than right" claims its tokens before "left" does.
    claimed: set[int] = set()
    for mod in sorted(modifiers, key=lambda m: (m.start - m.end, m.start)):
        tokens = range(mod.start, mod.end)
        if mod.group == "not_laterality":  # "right atrium": a side word that names a structure
            claimed.update(tokens)
            continue
        if mod.group == "laterality" and any(t in claimed for t in tokens):
            continue
        target = _choose(lower, findings, mod)
        if target is None:
            continue
        if mod.group == "laterality":
            claimed.update(tokens)
        collected[target][mod.group].append((mod.start, mod.value))
    resolved = [_resolve(c) for c in collected]
    _inherit_side(lower, findings, resolved)
    return resolved


_LINK_BREAK_IDS = _CLAUSE_BREAK_IDS | frozenset(map(hash_string, ("and", "with", "without", "no", "not")))


def _inherit_side(lower: list[int], findings: list[tuple[int, int]], resolved: list[dict]) -> None:
    """An interpretation without a side takes the side and place of the observation it explains:
    "Right basilar opacity, atelectasis versus pneumonia" -> both right, base."""
    for i in range(1, len(findings)):
        if resolved[i]["laterality"] is not None:
            continue
        j = i - 1
        if resolved[j]["laterality"] is None:
            continue
        if not _LINK_BREAK_IDS.isdisjoint(lower[findings[j][1]:findings[i][0]]):
            continue
        resolved[i]["laterality"] = resolved[j]["laterality"]
        if resolved[i]["location"] is None:
            resolved[i]["location"] = resolved[j]["location"]


def _resolve(found: dict[str, list[tuple[int, str]]]) -> dict:
    # Values in sentence order, each once.
    values = {g: (list(dict.fromkeys(v for _, v in sorted(f))) if len(f) > 1 else [f[0][1]]) if f else []
              for g, f in found.items()}
    lat = values["laterality"]
    if "bilateral" in lat or ("left" in lat and "right" in lat):
        laterality = "bilateral"
    else:
        laterality = lat[0] if lat else None
    change = values["change"]
    # "resolved" outranks "decreased" ("has resolved, previously decreasing"); then the first said.
    change_value = "resolved" if "resolved" in change else (change[0] if change else None)
    return {
        "laterality": laterality,
        "location": ", ".join(values["location"]) or None,
        "severity": values["severity"][0] if values["severity"] else None,
        "descriptor": ", ".join(values["descriptor"]) or None,
        "size": values["size"][0] if values["size"] else None,
        "change": change_value,
    }
