"""Closed fine questions: presence ("Is there a pleural effusion?") and verify ("... on the left?").

* presence 'yes' needs a positive mention. 'no' needs an explicit negative that covers the whole
  chest: unlateralised or bilateral, or one left and one right ("no right effusion" alone says
  nothing about the left, so it yields only the verify pair "... on the right?" -> no).
* A concept the report only hedges (uncertain_policy 'hedge') is answered "possibly"; with 'skip'
  it gets no presence pair. Never a 'yes'.
* verify: 'yes' from a positive mention on that side, 'no' from an explicit negative on that side
  (and no positive there), "possibly" (uncertain_policy 'hedge') from a hedged mention on that side.
* verify asks the wrong side as often as the right one: a finding the report places on one side only
  also gets "... on the other side?" -> 'no', unless some mention of a finding of the same region
  (any certainty but negative) names that other side ("right basal opacity" blocks "Is there
  atelectasis on the right?" -> no). See FineQuestions._fine for that report-level check.
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
        if self._verify and lateral:
            self._plan_verify(add, ms, pos, neg, unc if self.hedge else ())

    def _plan_verify(self, add, ms: Sequence[Mapping], pos: list[int], neg: list[int], unc=()) -> None:
        for side in ("left", "right"):
            for answer, group in ((self.yes, pos), (self.possibly, unc), (self.no, neg)):
                idx = [i for i in group if side in sides(ms[i].get("laterality"))]
                if idx:
                    add("verify", answer, idx, "verify:" + side)
                    break

    @staticmethod
    def _one_side(ms: Sequence[Mapping], pos: list[int], unc: list[int], neg: list[int]) -> str | None:
        """The side the positive mentions name when they name only one and no mention names the other."""
        named = set()
        for i in (*pos, *unc, *neg):
            named |= sides(ms[i].get("laterality"))
        if len(named) != 1 or not pos or any(not sides(ms[i].get("laterality")) for i in pos):
            return None
        return next(iter(named))
