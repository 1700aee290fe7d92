"""Sections -> sentences.

Radiology text defeats generic sentencizers: hard-wrapped lines, `1.` list markers, `..` typos,
de-identification tokens (`___`, `XXXX`) and decimals ("1.5 cm"). A regex splitter tuned for that is
faster and more predictable than a statistical one, and spaCy blank has none anyway.
"""

from __future__ import annotations

import re
from functools import lru_cache

# A list marker at the start of a line ("1.", "2)", "-", "*", "•"), or inline after a sentence end.
_LINE_LIST_MARKER = re.compile(r"(?m)^[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]+")
_INLINE_LIST_MARKER = re.compile(r"(?<=[.;:])\s+\d{1,2}[.)]\s+(?=[A-Za-z_])")
_CHUNK_BREAK = re.compile(r"\n[ \t]*\n|\x00")
_WS = re.compile(r"\s+")
# Words after which a period does not end a sentence (unless an upper-case word follows).
_ABBREVIATIONS = frozenset("dr mr mrs ms vs approx e.g i.e etc cf fig st pt pts esp incl resp ca jr sr".split())
# Candidate boundaries: ., !, ? (or a run such as "..") followed by whitespace or the end.
_BOUNDARY = re.compile(r"([.!?]+)(\s+|$)")


def _split_chunk(chunk: str) -> list[str]:
    chunk = _WS.sub(" ", chunk).strip()
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(chunk):
        before = chunk[start:m.start(1)]
        last_word = before.rsplit(" ", 1)[-1].lower()
        following = chunk[m.end():m.end() + 1]
        if m.group(1) == "." and last_word in _ABBREVIATIONS and following and not following.isupper():
            continue
        piece = chunk[start:m.end(1)].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = chunk[start:].strip()
    if tail:
        out.append(tail)
    return out


def split_sentences(text: str | None) -> list[str]:
    """Whitespace-normalised sentences of one section, list markers removed, hard wraps joined."""
    if not text:
        return []
    return list(_split_cached(text))


@lru_cache(maxsize=32_768)
def _split_cached(text: str) -> tuple[str, ...]:
    # Whole sections recur in real corpora ("No acute cardiopulmonary process."), so memoise them.
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", " ")
    text = _LINE_LIST_MARKER.sub("\x00", text)
    text = _INLINE_LIST_MARKER.sub("\x00", text)
    sentences: list[str] = []
    for chunk in _CHUNK_BREAK.split(text):
        sentences.extend(_split_chunk(chunk))
    return tuple(s for s in sentences if any(ch.isalnum() for ch in s))
