"""Closed fine questions: presence ("Is there a pleural effusion?") and verify ("... on the left?").

* presence 'yes' needs a positive mention. 'no' needs an explicit negative that covers the whole
  chest: unlateralised or bilateral, or one left and one right ("no right effusion" alone says
  nothing about the left, so it yields only the verify pair "... on the right?" -> no).
* A concept the report only hedges (uncertain_policy 'hedge') is answered "possibly"; with 'skip'
  it gets no presence pair. Never a 'yes'.
* verify: 'yes' from a positive mention on that side, 'no' from an explicit negative on that side
  (and no positive there).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from .common import BOTH, sides


class ClosedQuestions:
    """Mixin of QAGenerator: the presence / verify part of a concept's plan (see fine.py)."""

    def _plan_closed(self, add, ms: Sequence[Mapping], pos: list[int], unc: list[int], neg: list[int],
                     neg_cover: frozenset[str], lateral: bool) -> None:
        if not pos and not unc:  # explicit negatives only
            if self._presence and neg_cover >= BOTH:
                add("presence", self.no, neg)
            if self._verify and lateral:
                self._plan_verify(add, ms, pos, neg)
            return
        if self._presence:
            if pos:
                add("presence", self.yes, pos)
            elif self.hedge:
                add("presence", self.possibly, unc)
        if self._verify and lateral and (pos or neg):
            self._plan_verify(add, ms, pos, neg)

    def _plan_verify(self, add, ms: Sequence[Mapping], pos: list[int], neg: list[int]) -> None:
        for side in ("left", "right"):
            idx = []
            for i in pos:
                if side in sides(ms[i].get("laterality")):
                    idx.append(i)
            answer = self.yes
            if not idx:
                for i in neg:
                    if side in sides(ms[i].get("laterality")):
                        idx.append(i)
                answer = self.no
            if idx:
                add("verify", answer, idx, "verify:" + side)
