"""The abnormality list: "What abnormalities are seen?" -> "cardiomegaly, possible pleural effusion".

* Items: the positive (and hedged, as "possible X") concepts of kind 'finding' (not devices or
  normal variants), in concepts.yaml order. It uses all concepts whatever the scheme, so it is
  never silently incomplete.
* Concepts that name one fact (concepts.yaml `same_fact`) are listed once, by the group's first
  ("cardiomegaly", not also "enlarged cardiac silhouette").
* "none" only when the report has explicit negatives and no positive or hedged finding.
* uncertain_policy 'skip': no list when the report hedges (leaving the finding out would overstate
  normality).
"""

from __future__ import annotations

from .common import choice, evidence


class AbnormalityList:
    """Mixin of QAGenerator."""

    def _abnormality(self, head: tuple, slot: int, found: list, hedged: list, ms: list, negs: list, out: list,
                     vkeys: dict) -> None:
        """Fill the abnormality placeholder at out[slot], or drop it and renumber the rows after it."""
        rid, subject, split, base = head
        if self.same_fact and len(found) + len(hedged) > 1 and (
                any([cq.cid in self.same_fact for cq in found]) or any([cq.cid in self.same_fact for cq in hedged])):
            found, hedged = self._once_per_fact(found, hedged)
        answer = None
        if hedged and not self.hedge:
            pass
        elif found or hedged:
            if len(found) == 1 and not hedged:
                answer = found[0].name
            else:
                items = [cq.name for cq in sorted(found, key=_sort_key)]
                items += [self.hedge_item.format(item=cq.name) for cq in sorted(hedged, key=_sort_key)]
                answer = self.sep.join(items)
        elif negs:
            answer, ms = self.none, negs
        if answer is None:  # no abnormality pair: the rows after the slot move up one position
            del out[slot]
            sfx = self._sfx
            for i in range(slot, len(out)):
                out[i] = (rid + sfx[i],) + out[i][1:]
            moved = {i - 1: k for i, k in vkeys.items()}  # all verify rows come after the slot
            vkeys.clear()
            vkeys.update(moved)
            return
        ids, text = evidence(ms)
        entry = self._report_q.get("abnormality") or self._report_entry("abnormality")
        out[slot] = (rid + self._sfx[slot], rid, subject, "fine", "abnormality", choice(entry, base), answer, "open",
                     None, None, ids, text, split)


    def _once_per_fact(self, found: list, hedged: list) -> tuple[list, list]:
        best: dict[int, tuple] = {}  # same_fact group -> (found before hedged, rank) of its best member
        for kind, cqs in ((0, found), (1, hedged)):
            for cq in cqs:
                gr = self.same_fact.get(cq.cid)
                if gr is not None and (gr[0] not in best or (kind, gr[1]) < best[gr[0]]):
                    best[gr[0]] = (kind, gr[1])

        def keep(cq, kind: int) -> bool:
            gr = self.same_fact.get(cq.cid)
            return gr is None or best[gr[0]] == (kind, gr[1])
        return [cq for cq in found if keep(cq, 0)], [cq for cq in hedged if keep(cq, 1)]


def _sort_key(cq) -> tuple[int, str]:
    return cq.sort_key
