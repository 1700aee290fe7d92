"""Attach attribute words (laterality, location, severity, descriptor, size, change) to findings.

An attribute word describes the finding whose noun phrase it sits in, and nothing else:

* inside a finding span ("subsegmental atelectasis") it belongs to that finding, except a change word:
  "increased density" names the finding, it compares nothing;
* before a finding (pre-modifier), when only modifier words, anatomy words ("lung", "lobe"), numbers
  and "XXXX" lie between: "small left pleural effusion", "right lower lobe opacity". Any other word
  ends the phrase: in "apical hilar retraction" and "mediastinal and hilar contours" the words describe
  the retraction and the contours, which are not findings. "and"/"or" coordinate only anatomy
  ("right upper lobe and left lower lobe opacities"), and a second side word starts a new phrase
  ("... upper mediastinal Bilateral small pleural effusions");
* after a finding (post-modifier), through a prepositional or predicative phrase: "opacity in the
  left base", "effusion is small", "cardiomegaly, unchanged", "effusions, left greater than right".
  A phrase led by another word ("with increased retrosternal airspace", "sparing of the apices",
  "without acute disease") belongs to its own head and is never read into the finding;
* a clause break (";", "but", "which" ...) ends every phrase; a sentence-final change word with no
  finding of its own is about the sentence's subject ("..., unchanged from the prior study").

A severity adverb inside a longer descriptor or change phrase belongs to that phrase ("minimally
displaced", "slightly increased"). An interpretation without a side takes the side and place of the
observation it explains ("Right basilar opacity, atelectasis versus pneumonia").
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
_COORD_IDS = frozenset(map(hash_string, ("and", "or", "&")))
_PRE_MAX = 5    # tokens between a pre-modifier and its finding
_POST_MAX = 8   # tokens between a finding and a post-modifier

# Nouns that modifiers describe but that are no finding: a modifier of one of these ("mediastinal
# and hilar contours", "apical hilar retraction", "decreased vascular markings") is absorbed by it.
_HEAD_NOUNS = frozenset(map(hash_string, (
    "contour", "contours", "silhouette", "silhouettes", "retraction", "marking", "markings", "structure",
    "structures", "vasculature", "vascularity", "vessel", "vessels", "border",
    "borders", "margin", "margins", "outline", "space", "spaces", "volume", "volumes", "expansion",
    "inflation", "inspiration", "effort", "projection", "view", "views", "film", "technique", "rotation",
)))
_NEGATOR_IDS = frozenset(map(hash_string, ("no", "not", "without", "sparing", "spared", "except", "excluding")))
_WITH_ID = hash_string("with")
_COPULA_IDS = frozenset(map(hash_string, ("is", "are", "was", "were", "be", "been", "appears", "appear")))
_COMPARE_IDS = frozenset(map(hash_string, ("than", "greater", "more", "larger", "worse", ">")))
_ABSORB_REACH = 3  # unknown words a modifier may skip on its way to the noun that absorbs it
# ... within its own noun phrase: a preposition or verb ends the phrase ("right hilum on PA view")
_PHRASE_END_IDS = frozenset(map(hash_string, (
    "on", "in", "at", "of", "to", "for", "from", "by", "as", "within", "over", "overlying", "is", "are", "was",
    "were", "be", "been", "has", "have", "seen", "noted", "with", "without", "no", "not", "versus", "vs")))
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "eleventh",
             "twelfth", "1st", "2nd", "3rd", *(f"{n}th" for n in range(4, 13)), *(str(n) for n in range(1, 13)))
# Anatomy nouns (and rib / vertebra numbers) that can stand in a coordinated place ("bilateral lung and
# perihilar granulomas", "right 10th and left 9th rib fractures")
_ANATOMY_NOUN_IDS = frozenset(map(hash_string, ("lung", "lungs", "lobe", "lobes", "zone", "zones", "field", "fields",
                                                "region", "regions", "segment", "segments", *_ORDINALS)))
# A place a device or finding sits in before "with": "right chest XXXX with catheter tip at the SVC"
_PLACE_IDS = _ANATOMY_NOUN_IDS | frozenset(map(hash_string, ("chest", "hemithorax", "xxxx", "the")))
# "catheter with the tip at the cavoatrial junction": the tip's place is the device's
_TIP_IDS = frozenset(map(hash_string, ("tip", "tips", "end", "distal")))
_DETERMINER_IDS = frozenset(map(hash_string, ("the", "a", "an", "its", "their", "xxxx")))
_SIZE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*(?:x|×|by)\s*(\d+(?:\.\d+)?))?(?:\s*(?:x|×|by)\s*(\d+(?:\.\d+)?))?"
    r"\s*(mm|cm|millimeters?|centimeters?)\b",
    re.IGNORECASE,
)
_DISTANCE = re.compile(r"\s*(?:above|below|from|beyond|proximal|distal|superior|inferior|into|past|short of)\b",
                       re.IGNORECASE)
_ANATOMY_GROUPS = frozenset({"laterality", "location"})


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
    text = doc.text if text is None else text
    for m in _SIZE.finditer(text):
        if _DISTANCE.match(text, m.end()):
            continue  # "4 cm above the carina" is a distance, not a size
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


class _Sentence:
    """What the attachment rules read of one sentence: token hashes, the modifier groups of each token
    and the finding (index) each token belongs to."""

    __slots__ = ("lower", "groups_at", "finding_at")

    def __init__(self, lower: list[int], modifiers: list[Modifier], findings: list[tuple[int, int]]):
        self.lower = lower
        self.groups_at: list[frozenset[str] | None] = [None] * len(lower)
        for mod in modifiers:
            for t in range(mod.start, mod.end):
                g = self.groups_at[t]
                self.groups_at[t] = frozenset((mod.group,)) if g is None else g | {mod.group}
        self.finding_at: list[int] = [-1] * len(lower)
        for i, (a, b) in enumerate(findings):
            for t in range(a, b):
                self.finding_at[t] = i

    def absorbed(self, mod: Modifier) -> bool:
        """`mod` describes a non-finding noun to its right ("hilar retraction", "vascular markings")."""
        lower, groups_at, finding_at = self.lower, self.groups_at, self.finding_at
        unknown = 0
        for t in range(mod.end, len(lower)):
            h = lower[t]
            if finding_at[t] >= 0 or h == _COMMA_ID or h in _CLAUSE_BREAK_IDS:
                return False
            if h in _HEAD_NOUNS:
                return True
            if h in _PHRASE_END_IDS:
                return False
            if groups_at[t] is None and h not in _COORD_IDS:
                unknown += 1
                if unknown > _ABSORB_REACH:
                    return False
        return False


def _pre_ok(s: _Sentence, mod: Modifier, target: tuple[int, int], loose: bool) -> bool:
    """`mod` sits in the phrase that ends with the finding `target`. Strict: a noun phrase ("small left
    pleural effusion"); loose: also across commas and copulas ("Left lower lobe, superior segment,
    airspace consolidation", "Left base could be atelectasis")."""
    start = target[0]
    if start - mod.end > (_POST_MAX if loose else _PRE_MAX):
        return False
    lower, groups_at = s.lower, s.groups_at
    bare = True  # only anatomy so far: "Right middle lobe with increased opacities" places them (loose)
    for t in range(mod.end, start):
        h = lower[t]
        if h == _WITH_ID and loose and bare:
            continue
        if h in _CLAUSE_BREAK_IDS or h in _NEGATOR_IDS or h == _WITH_ID or h in _HEAD_NOUNS:
            return False
        if not (groups_at[t] or h in _PLACE_IDS):
            bare = False
        if not loose and (h == _COMMA_ID or h in _COPULA_IDS):
            return False
        if h in _COORD_IDS:
            # coordinated anatomy ("upper and lower lobe", "right upper lobe and left lower lobe") or
            # coordinated words of the finding itself ("chronic inflammatory and fibrotic changes")
            before, after = _place(s, t - 1), _place(s, t + 1)
            if t + 1 == start and lower[t - 1] not in _PLACE_IDS:
                continue
            if not (before and after and (before & after or (before <= _ANATOMY_GROUPS and after <= _ANATOMY_GROUPS))):
                return False
            continue
        # a second side word starts a new phrase unless coordinated ("right and left", "left more than
        # right"): in "Stable right upper mediastinal Bilateral small pleural effusions" neither "Stable",
        # "right" nor "mediastinal" describes the effusions
        if groups_at[t] and "laterality" in groups_at[t] and mod.value != "diffuse" \
                and _side_before(s, mod, t) \
                and not any(lower[u] in _COORD_IDS or lower[u] in _COMPARE_IDS for u in range(mod.end, t)):
            return False
    return True


def _side_before(s: _Sentence, mod: Modifier, t: int) -> bool:
    """A side word in `mod`'s own phrase (from up to 3 words before it) and before token t, not part of the
    side phrase at t."""
    groups_at, lower = s.groups_at, s.lower
    first = mod.start
    while first > 0 and mod.start - first < 3 and lower[first - 1] != _COMMA_ID \
            and lower[first - 1] not in _CLAUSE_BREAK_IDS and s.finding_at[first - 1] < 0:
        first -= 1
    run = t  # the side phrase t belongs to ("left-sided") starts here
    while run > first and groups_at[run - 1] and "laterality" in groups_at[run - 1]:
        run -= 1
    return any(groups_at[u] and "laterality" in groups_at[u] for u in range(first, run))


def _place(s: _Sentence, t: int) -> frozenset[str] | None:
    """The modifier groups of token t, anatomy nouns counting as a location."""
    if t < 0 or t >= len(s.lower):
        return None
    g = s.groups_at[t]
    return g if g is not None else (_LOCATION if s.lower[t] in _ANATOMY_NOUN_IDS else None)


_LOCATION = frozenset(("location",))
# What may follow a change word that ends its sentence's phrase ("unchanged from prior", "stable.")
_CHANGE_FOLLOWERS = frozenset(map(hash_string, (
    ",", ".", ";", "from", "since", "compared", "relative", "to", "when", "as", "in", "on", "at", "than", "over",
    "the", "prior", "previous", "and", "with", "allowing", "given", "xxxx")))


def _post_ok(s: _Sentence, target: tuple[int, int], mod: Modifier) -> bool:
    """`mod` sits in a phrase led from the finding `target` by prepositions, copulas or a comma, not in a
    phrase of its own ("with increased retrosternal airspace", "sparing of the apices")."""
    end = target[1]
    if mod.start - end > _POST_MAX:
        return False
    lower = s.lower
    for t in range(end, mod.start):
        h = lower[t]
        if h == _WITH_ID and _tip_follows(lower, t + 1, mod.start):
            continue
        if h in _CLAUSE_BREAK_IDS or h in _NEGATOR_IDS or h == _WITH_ID:
            return False
    return True


def _tip_follows(lower: list[int], t: int, end: int) -> bool:
    """"... with the tip ..." (before `end`): the tip's place is the device's."""
    while t < end and lower[t] in _DETERMINER_IDS:
        t += 1
    return t < end and lower[t] in _TIP_IDS


def _choose(s: _Sentence, findings: list[tuple[int, int]], mod: Modifier) -> int | None:
    i = s.finding_at[mod.start]
    if i < 0 and s.finding_at[mod.end - 1] >= 0:  # runs into a finding ("bilateral pleural" + "pleural effusion")
        i = s.finding_at[mod.end - 1]
    if i >= 0:
        # "increased density", "diminished lung volumes" name the finding and compare nothing; only the
        # filler of a predicate does ("the lungs remain hyperexpanded")
        return None if mod.group == "change" and mod.value != "unchanged" else i
    if s.absorbed(mod):
        return None
    right = next((i for i, (st, _) in enumerate(findings) if st >= mod.end), None)
    left = next((i for i in range(len(findings) - 1, -1, -1) if findings[i][1] <= mod.start), None)
    if right is not None and _pre_ok(s, mod, findings[right], loose=False):
        return right
    if left is not None and _post_ok(s, findings[left], mod):
        return left
    if right is not None and _pre_ok(s, mod, findings[right], loose=True):
        return right
    # A sentence-final change word ("..., unchanged from the prior study") is about the sentence's subject,
    # unless it describes a noun of its own ("with increased retrosternal airspace").
    if mod.group == "change" and left is not None and right is None \
            and _CLAUSE_BREAK_IDS.isdisjoint(s.lower[findings[0][1]:mod.start]) \
            and (mod.end >= len(s.lower) or s.lower[mod.end] in _CHANGE_FOLLOWERS):
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
    ordered = sorted(modifiers, key=lambda m: (m.start - m.end, m.start))
    kept = [m for m in ordered if not _inside_longer(m, ordered)]
    sentence = _Sentence(lower, [m for m in kept if m.group != "not_laterality"], findings)
    claimed: set[int] = set()
    for mod in kept:
        tokens = range(mod.start, mod.end)
        if mod.group == "not_laterality":  # "right atrium": a side word that names a structure
            claimed.update(tokens)
            continue
        if mod.group == "laterality" and any(t in claimed for t in tokens):
            continue
        target = _choose(sentence, findings, mod)
        if target is None:
            continue
        if mod.group == "laterality":
            claimed.update(tokens)
        collected[target][mod.group].append((mod.start, mod.value))
    resolved = [_resolve(c) for c in collected]
    _inherit_side(lower, findings, resolved)
    return resolved


def _inside_longer(mod: Modifier, ordered: list[Modifier]) -> bool:
    """Part of a longer phrase of the same group ("spine" in "thoracic spine"), or a severity adverb inside
    a longer descriptor or change phrase ("minimally displaced", "slightly increased")."""
    groups = ("descriptor", "change", "severity") if mod.group == "severity" else (mod.group,)
    return any(o.group in groups and o.start <= mod.start and mod.end <= o.end
               and o.end - o.start > mod.end - mod.start for o in ordered)


_LINK_BREAK_IDS = _CLAUSE_BREAK_IDS | frozenset(map(hash_string, ("and", "without", "no", "not")))
# "with" links an observation to its interpretation only after these ("opacity consistent with atelectasis")
_LINKERS = frozenset(map(hash_string, ("consistent", "compatible", "associated")))


def _inherit_side(lower: list[int], findings: list[tuple[int, int]], resolved: list[dict]) -> None:
    """An interpretation without a side takes the side and place of the observation it explains:
    "Right basilar opacity, atelectasis versus pneumonia" -> both right, base."""
    for i in range(1, len(findings)):
        if resolved[i]["laterality"] is not None:
            continue
        j = i - 1
        if resolved[j]["laterality"] is None:
            continue
        between = lower[findings[j][1]:findings[i][0]]
        if not _LINK_BREAK_IDS.isdisjoint(between) or any(
                h == _WITH_ID and (k == 0 or between[k - 1] not in _LINKERS) for k, h in enumerate(between)):
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
