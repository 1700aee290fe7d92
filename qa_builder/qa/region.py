"""Middle pairs: what the report says about one anatomical region ("Describe the pleura").

* A sentence with finding mentions belongs to the regions of their concepts; its other keywords are
  mostly landmarks ("opacity overlying the left 5th rib" is not a bones sentence).
* A sentence without mentions ("The osseous structures are intact.") belongs to the regions its
  keywords name (concepts.yaml `regions`); sentences no region claims are left to the coarse pairs.
* A negated list that spans regions is cut to the region's items ("No pneumonia, effusion or
  pneumothorax." -> pleura: "No effusion or pneumothorax."); a leading connective that points at text
  left out ("Specifically, ...") is dropped; placeholders as QAConfig.placeholders says (text.py).
* A sentence repeated in the impression is added once per region. Answers keep report order.
* Evidence: the region's mention ids (empty for a region whose sentences carry no mention).
"""

from __future__ import annotations

import re
from operator import lt as _LT
from typing import Mapping, Sequence

from .common import GOLDEN, MASK64, NO_SIDE, clean
from .config import EVIDENCE_SECTIONS
from .text import deidentified, region_clause, without_lead_connective

_WORD = re.compile(r"[a-z0-9]+")


class RegionQuestions:
    """Mixin of QAGenerator."""

    def _init_regions(self, region_keywords: Mapping[str, Sequence[str]], region_names: Mapping) -> None:
        self.region_keywords = region_keywords
        self.region_names = {r: str(region_names.get(r, r.replace("_", " "))) for r in region_keywords}
        # Middle pairs for every region but 'other' (a grab bag with no sensible question).
        self.region_order = [r for r in region_keywords if r != "other"]
        # Region keywords match whole words or two-word phrases ("soft tissues"). Each distinct word
        # or bigram is matched against the patterns once and cached, so a new sentence costs a
        # tokenisation and a few dict lookups instead of a scan with a 100-branch regex.
        parts = [f"(?P<{r}>{'|'.join(pats)})" for r, pats in region_keywords.items() if pats]
        self._region_re = re.compile("|".join(parts), re.IGNORECASE) if parts else None
        self._token_cache: dict[str, frozenset[str]] = {}
        self._sent_cache: dict[str, list] = {}
        self._kw_cache: dict[str, frozenset[str]] = {}
        self._region_q: dict[str, tuple] = {}
        self._clause_cache: dict[tuple, str | None] = {}  # (sentence, its mentions, region) -> region_clause
        # every concept's region is a key of region_keywords (load_concepts checks; unknown -> other)
        self._one_region = {r: frozenset((r,)) for r in region_keywords}

    def _token_regions(self, token: str) -> frozenset[str]:
        hit = self._token_cache.get(token)
        if hit is None:
            m = self._region_re.fullmatch(token) if self._region_re else None
            # groupdict, not lastgroup: a user pattern may contain its own (unnamed) groups
            hit = frozenset(k for k, v in m.groupdict().items() if v is not None) if m else NO_SIDE
            if len(self._token_cache) < 500_000:
                self._token_cache[token] = hit
        return hit

    def _answer_text(self, raw: str) -> str | None:
        text = clean(raw)
        if text:
            text = deidentified(without_lead_connective(text), self.config.placeholders, self.config.placeholder_token)
        return text

    def _sentence(self, raw: str) -> list:
        """[answer text, lower-cased raw text, keyword regions or None until first needed], cached:
        sentences of normal reports repeat a lot."""
        hit = self._sent_cache.get(raw)
        if hit is None:
            norm = clean(raw)
            hit = [self._answer_text(raw), norm.lower() if norm else "", None]
            if len(self._sent_cache) < 100_000:
                self._sent_cache[raw] = hit
        return hit

    def keyword_regions(self, norm: str) -> frozenset[str]:
        """Regions the keywords of a lower-cased sentence name (words and two-word phrases)."""
        hit = self._kw_cache.get(norm)
        if hit is None:
            regions: set[str] = set()
            words = _WORD.findall(norm)
            cache, tok = self._token_cache, self._token_regions
            prev = None
            for w in words:  # each word, then the bigram it ends; most name no region
                r = cache.get(w)
                if r is None:
                    r = tok(w)
                if r:
                    regions |= r
                if prev is not None:
                    bigram = prev + " " + w
                    r = cache.get(bigram)
                    if r is None:
                        r = tok(bigram)
                    if r:
                        regions |= r
                prev = w
            hit = frozenset(regions)
            if len(self._kw_cache) < 100_000:
                self._kw_cache[norm] = hit
        return hit

    def _add_clauses(self, raw: str, norm: str, ms: list, regions: frozenset[str], added: dict, acc: dict) -> None:
        """Add to each region the part of a multi-region sentence about it (the whole sentence unless it is
        a negated list, see text.region_clause), once per region."""
        items = tuple(sorted((m.get("start"), m.get("end"), r, m.get("certainty")) for _, r, m in ms))
        prev = added.get(norm)
        new = regions - prev if prev is not None else regions
        added[norm] = regions if prev is None else prev | regions
        whole = None
        for r in new:
            key = (raw, items, r)
            text = self._clause_cache.get(key, False)
            if text is False:
                clause = region_clause(raw, items, r) if all(isinstance(x, int) for it in items for x in it[:2]) else None
                text = self._answer_text(clause) if clause else None
                if len(self._clause_cache) < 100_000:
                    self._clause_cache[key] = text
            if text is None:
                if whole is None:
                    whole = (self._sent_cache.get(raw) or self._sentence(raw))[0]
                text = whole
            if text:
                acc[r][0].append(text)

    def _middle(self, head: tuple, sentences: Sequence[Mapping], by_sid: Mapping, out: list) -> None:
        """Sentences (in the given, i.e. report, order) grouped by region; evidence = mentions of that region."""
        rid, subject, split, base = head
        acc: dict[str, tuple[list[str], list]] = {}  # region -> (its sentences, its mention ids)
        added: dict[str, frozenset[str]] = {}  # lower-cased sentence -> regions it was added to
        sent_cache, one_region = self._sent_cache, self._one_region
        for s in sentences:
            if s["section"] not in EVIDENCE_SECTIONS:
                continue
            hit = sent_cache.get(s["sentence"]) or self._sentence(s["sentence"])
            text, norm, regions = hit
            if text is None:
                continue
            ms = by_sid.get(s["sentence_id"])
            if ms is None:
                if regions is None:  # keyword regions, cached with the sentence on first use
                    regions = hit[2] = self.keyword_regions(norm)
            elif len(ms) == 1:
                mid, r, _ = ms[0]
                a = acc.get(r)
                if a is None:
                    a = acc[r] = ([], [])
                a[1].append(mid)
                regions = one_region[r]
                if norm not in added:  # the common case: one region, a sentence not seen before
                    added[norm] = regions
                    a[0].append(text)
                    continue
            else:
                regions = set()
                for mid, r, _ in ms:
                    regions.add(r)
                    a = acc.get(r)
                    if a is None:
                        acc[r] = ([], [mid])
                    else:
                        a[1].append(mid)
                regions = frozenset(regions)
                if len(regions) > 1:  # a list across regions: each region gets its own items
                    self._add_clauses(s["sentence"], norm, ms, regions, added, acc)
                    continue
            prev = added.get(norm)
            if prev is not None:  # impressions often repeat a findings sentence: add it once per region
                added[norm] = prev | regions
                regions = regions - prev
            else:
                added[norm] = regions
            for r in regions:
                a = acc.get(r)
                if a is None:
                    acc[r] = ([text], [])
                else:
                    a[0].append(text)
        if not acc:
            return
        sfx, region_q = self._sfx, self._region_q
        for r in self.region_order:
            a = acc.get(r)
            if a is not None and a[0]:  # (a region with evidence always has a sentence)
                answer = " ".join(a[0])
                ids = a[1]
                # sorted(set(ids)), skipped when they are ascending already (sentences and
                # their mentions in report order, the usual case)
                if len(ids) > 1 and not (ids[0] < ids[1] if len(ids) == 2 else all(map(_LT, ids, ids[1:]))):
                    ids = sorted(set(ids))
                entry = region_q.get(r)
                if entry is None:
                    entry = region_q[r] = self._q_entry("region", r, region=r)
                variants, kh, n = entry
                out.append((rid + sfx[len(out)], rid, subject, "middle", "region",
                            variants[((((base ^ kh) * GOLDEN) & MASK64) >> 32) % n], answer, "open",
                            None, r, ids, answer, split))
