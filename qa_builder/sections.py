"""Split a free-text radiology report into canonical sections.

`split_sections(text)` returns ``{canonical name: section text}`` for the sections it finds. Header
synonyms are data (`lexicon/sections.yaml`), so a radiologist can review them without reading code.

A header is recognised when it is a listed synonym (case-insensitive) and is written as
  * ``HEADER: text`` at the start of a line (any case; text may follow on the same line),
  * ``HEADER`` alone on its line or ``Header - text`` (first letter upper case),
  * ``... text. HEADER: text`` inside a line: ALL CAPS anywhere, or Capitalised after ``.;!?``
    (flattened reports where the line breaks were lost),
  * an unlisted ALL-CAPS ``SOMETHING:`` at the start of a line containing a keyword of the lexicon
    (``CHEST, TWO VIEWS:`` -> findings), as MIMIC-CXR's create_section_files.py does.
Banner lines (``FINAL REPORT``) and separator lines (``_____``) are dropped and end the section
before them. Anything else, including unknown headers such as ``LUNGS:``, is ordinary text of the
section it is in. Text before the first header (the preamble) is not returned.

When no FINDINGS header is found, the unlabelled paragraphs are recovered the way MIMIC-CXR's
create_section_files.py does it (its ``last_paragraph``):
  * no IMPRESSION either: the last segment (the preamble when there are no headers at all, or the
    last INDICATION/HISTORY/COMPARISON/TECHNIQUE/EXAMINATION section) is cut in blank-line separated
    paragraphs; a named section keeps its first paragraph, the last paragraph becomes the impression
    and those in between the findings. A preamble's first paragraph is dropped when it is a title
    (one ALL-CAPS line without a full stop) and is not the only paragraph.
  * IMPRESSION present: paragraphs after the first of the COMPARISON/TECHNIQUE/EXAMINATION section
    (or the preamble) right before it become the findings. INDICATION/HISTORY are left alone
    there, because their extra paragraphs are clinical questions ("r/o pneumonia"), not findings.
So a report with only an IMPRESSION has no findings key.

Section texts are stripped; line breaks inside a section are kept as given. Several sections with
the same canonical name are joined with a blank line. The function never raises on a str.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qa_builder.yamlio import load_yaml

__all__ = ["CANONICAL_SECTIONS", "SectionLexicon", "load_lexicon", "header_to_section", "split_sections"]

LEXICON_PATH = Path(__file__).resolve().parent / "lexicon" / "sections.yaml"

# The first seven are the README's section columns; the rest are context the parser may ignore.
CANONICAL_SECTIONS = (
    "findings", "impression", "indication", "comparison", "history", "technique", "examination",
    "recommendation", "notification", "addendum", "wet_read", "comment",
)

_PRE = "_pre"  # internal name of text outside any section (preamble, text after a banner)


@dataclass(frozen=True, slots=True)
class SectionLexicon:
    synonyms: dict[str, str]                         # normalised header -> canonical section
    banners: frozenset[str]                          # normalised banner lines
    keywords: tuple[tuple[str, str], ...]            # (' word ', section), in precedence order
    last_words: frozenset[str]                       # last word of every synonym (cheap pre-filter)


def _norm(header: str) -> str:
    return " ".join(header.lower().split())


_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _keyword_norm(header: str) -> str:
    # ' chest two views ' : padded so that keywords match whole words with a plain `in`
    return " " + _NON_ALNUM.sub(" ", header.lower()).strip() + " "


def load_lexicon(path: Path | str = LEXICON_PATH) -> SectionLexicon:
    """Read and validate the header lexicon (ValueError on unknown sections or a synonym listed twice)."""
    data = load_yaml(Path(path).read_text(encoding="utf-8"))
    synonyms: dict[str, str] = {}
    for section, headers in (data.get("sections") or {}).items():
        if section not in CANONICAL_SECTIONS:
            raise ValueError(f"{path}: unknown section {section!r}")
        for header in headers:
            key = _norm(str(header))
            if key in synonyms and synonyms[key] != section:
                raise ValueError(f"{path}: header {header!r} listed for {synonyms[key]!r} and {section!r}")
            synonyms[key] = section
    banners = frozenset(_norm(str(b)) for b in data.get("banners") or ())
    clash = banners & synonyms.keys()
    if clash:
        raise ValueError(f"{path}: {sorted(clash)} are both banners and section headers")
    keywords: list[tuple[str, str]] = []
    for rule in data.get("keywords") or ():
        section = rule["section"]
        if section not in CANONICAL_SECTIONS:
            raise ValueError(f"{path}: unknown keyword section {section!r}")
        keywords.extend((_keyword_norm(str(w)), section) for w in rule["words"])
    last_words = frozenset(k.rsplit(" ", 1)[-1] for k in synonyms)
    return SectionLexicon(synonyms, banners, tuple(keywords), last_words)


# Loaded once at import (a few ms); split_sections reads these module globals on its hot path.
_LEX = load_lexicon()
_SYN = _LEX.synonyms
_BANNERS = _LEX.banners
_KEYWORDS = _LEX.keywords
_LAST_WORDS = _LEX.last_words


def header_to_section(header: str) -> str | None:
    """Canonical section of a header such as 'Reason for exam' (listed synonyms only), else None."""
    return _SYN.get(_norm(header))


def _compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    # Possessive quantifiers (Python >= 3.11) stop the engine from backtracking through every
    # shorter prefix of a line; Python 3.10 gets the same matches, a little slower.
    try:
        return re.compile(pattern, flags)
    except re.error:  # pragma: no cover - Python 3.10
        return re.compile(pattern.replace("}+", "}").replace("*+", "*"), flags)


# Line starts. The text is scanned as "\n" + report so that the pattern begins with a literal: the
# engine jumps from line to line instead of trying every character.
#   h, t=':'  'HEADER: text'         h, t=''  'HEADER' alone on its line      s  '_____' separator
_LINE_HEADER = _compile(
    r"\n[ \t]*+(?:(?P<h>[A-Za-z][A-Za-z0-9 \t,/&()'_#-]{0,59}+)(?P<t>:|$)|(?P<s>[_=*~-]{5,}+)[ \t]*$)",
    re.MULTILINE,
)
# 'Header - text' (first letter upper case); only run when the report has a dash.
_DASH_HEADER = _compile(
    r"\n[ \t]*+(?P<h>[A-Z][A-Za-z0-9 \t,/&()'_#]{0,59}+)[-\u2013\u2014]+(?=[ \t]|$)", re.MULTILINE
)
_WORD = re.compile(r"\S+")
_PARA_SEP = re.compile(r"\n[ \t]*\n\s*")
_MAX_HEADER_WORDS = 4           # longest synonym looked for before a colon inside a line
_MAX_KEYWORD_HEADER_WORDS = 8   # longer ALL-CAPS 'xxx:' lines are sentences, not titles

# (start, end, section, is_keyword): the header text[start:end] opens `section`
_Header = tuple[int, int, str, bool]


def _key(head: str) -> str:
    key = head.lower().strip()
    return " ".join(key.split()) if ("  " in key or "\t" in key) else key


def _line_headers(text: str, found: list[_Header], used_colons: set[int], keyword_found: list[_Header]) -> None:
    """Headers at line starts (`text` is "\n" + report). Keyword headers go to `keyword_found`:
    they count only where no listed header ends at the same colon."""
    for m in _LINE_HEADER.finditer(text):
        head, term, _ = m.groups()
        if head is None:  # separator line
            found.append((*m.span(), _PRE, False))
            continue
        key = _key(head)
        name = _SYN.get(key)
        if name is not None:
            if term:
                used_colons.add(m.end() - 1)
            elif not head[0].isupper():
                continue  # a lower-case word alone on a line is a hard-wrapped sentence
            found.append((*m.span(), name, False))
        elif key in _BANNERS:
            if not term:
                found.append((*m.span(), _PRE, False))
        elif term and head.isupper() and key.count(" ") < _MAX_KEYWORD_HEADER_WORDS:
            padded = _keyword_norm(head)
            for word, section in _KEYWORDS:
                if word in padded:
                    keyword_found.append((*m.span(), section, True))
                    break
    if " -" in text or "\u2013" in text or "\u2014" in text:
        for m in _DASH_HEADER.finditer(text):
            name = _SYN.get(_key(m.group("h")))
            if name is not None:
                found.append((m.start(), m.end(), name, False))


def _colon_headers(text: str, found: list[_Header], used_colons: set[int]) -> None:
    """Headers inside a line ('... no effusion. IMPRESSION: ...'), found from the colons: up to four
    words before the colon that are a listed header, ALL CAPS, or Capitalised after '.;!?'."""
    i = text.find(":")
    while i != -1:
        if i not in used_colons:
            line_start = text.rfind("\n", 0, i) + 1
            lo = max(line_start, i - 60)
            seg = text[lo:i]
            tail = seg.rsplit(None, 1)
            if tail and tail[-1].lower() in _LAST_WORDS:  # cheap filter: most colons are not headers
                words = [(w.start(), w.group()) for w in _WORD.finditer(seg)]
                if lo > line_start and words[0][0] == 0:
                    words = words[1:]  # the window cut a word
                for k in range(min(_MAX_HEADER_WORDS, len(words)), 0, -1):
                    start = words[-k][0]
                    phrase = " ".join(w for _, w in words[-k:])
                    name = _SYN.get(phrase.lower())
                    if name is None:
                        continue
                    before = seg[:start].rstrip()
                    if phrase.isupper() or (phrase[0].isupper() and (not before or before[-1] in ".;!?")):
                        found.append((lo + start, i + 1, name, False))
                        used_colons.add(i)
                    break
        i = text.find(":", i + 1)


def _paragraphs(body: str) -> list[str]:
    return [p for p in (part.strip() for part in _PARA_SEP.split(body)) if p]


def _is_title(paragraph: str) -> bool:
    return "\n" not in paragraph and paragraph.isupper() and not paragraph.endswith(".") and len(paragraph) <= 80


_LAST_SEGMENT_SOURCES = frozenset({_PRE, "indication", "history", "comparison", "technique", "examination"})
_BEFORE_IMPRESSION_SOURCES = frozenset({_PRE, "comparison", "technique", "examination"})


def _recover_unlabelled(segments: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """No FINDINGS header: move unlabelled paragraphs to findings/impression (see module doc)."""
    nonempty = [k for k, (_, body) in enumerate(segments) if body and not body.isspace()]
    if not nonempty:
        return segments
    first_imp = next((k for k in nonempty if segments[k][0] == "impression"), None)
    if first_imp is None:
        target, allowed = nonempty[-1], _LAST_SEGMENT_SOURCES
    else:
        before = [k for k in nonempty if k < first_imp]
        if not before:
            return segments
        target, allowed = before[-1], _BEFORE_IMPRESSION_SOURCES
    name, body = segments[target]
    if name not in allowed:
        return segments
    paras = _paragraphs(body)
    if name == _PRE:
        keep: list[str] = []
        if len(paras) > 1 and _is_title(paras[0]):
            paras = paras[1:]
        moved = paras
    else:
        keep, moved = paras[:1], paras[1:]
    if not moved:
        return segments
    pieces = [(name, keep[0])] if keep else []
    if first_imp is None:
        if len(moved) > 1:
            pieces.append(("findings", "\n\n".join(moved[:-1])))
        pieces.append(("impression", moved[-1]))
    else:
        pieces.append(("findings", "\n\n".join(moved)))
    return segments[:target] + pieces + segments[target + 1:]


def split_sections(text: str) -> dict[str, str]:
    """Canonical section name -> stripped section text (see the module doc for the rules)."""
    if not text or text.isspace():
        return {}
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n" + text  # every line, the first included, starts after a "\n" (see _LINE_HEADER)
    found: list[_Header] = []
    keyword_found: list[_Header] = []
    used_colons: set[int] = set()
    _line_headers(text, found, used_colons, keyword_found)
    if text.count(":") > len(used_colons):
        _colon_headers(text, found, used_colons)
    for header in keyword_found:
        if header[1] - 1 not in used_colons:
            found.append(header)
    found.sort()

    segments: list[tuple[str, str]] = []
    name, start = _PRE, 0
    has_findings = False
    for h_start, h_end, h_name, is_keyword in found:
        if h_start < start:
            continue  # overlaps the header just taken
        if is_keyword and h_name == name:
            continue  # 'CHEST WALL:' inside FINDINGS is a sub-heading: keep it as text
        body = text[start:h_start]
        segments.append((name, body))
        if name == "findings" and not body.isspace():
            has_findings = True
        name, start = h_name, h_end
    body = text[start:]
    segments.append((name, body))
    if name == "findings" and body and not body.isspace():
        has_findings = True

    if not has_findings:
        segments = _recover_unlabelled(segments)

    out: dict[str, str] = {}
    for name, body in segments:
        if name != _PRE:
            body = body.strip()
            if body:
                out[name] = out[name] + "\n\n" + body if name in out else body
    return out
