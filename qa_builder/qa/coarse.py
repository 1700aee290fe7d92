"""Coarse pairs: the whole FINDINGS section ('report') and the IMPRESSION ('impression').

* 'report' is answered by FINDINGS, or by IMPRESSION when the report has no findings section; its
  evidence is every mention of that section.
* 'impression' is asked only when both sections exist (else it would repeat 'report').
* De-identification placeholders are replaced or their clauses dropped (QAConfig.placeholders, text.py).
"""

from __future__ import annotations

from typing import Mapping

from .common import choice, clean
from .text import deidentified


class CoarseQuestions:
    """Mixin of QAGenerator."""

    def _coarse(self, head: tuple, report: Mapping, f_ids: list, i_ids: list, out: list) -> None:
        """report / impression pairs; f_ids, i_ids: ids of the FINDINGS / IMPRESSION mentions."""
        rid, subject, split, base = head
        sfx = self._sfx
        policy, token = self.config.placeholders, self.config.placeholder_token
        findings = deidentified(clean(report.get("findings")), policy, token)
        impression = deidentified(clean(report.get("impression")), policy, token)
        main = findings or impression
        if main and "report" in self.types:
            entry = self._report_q.get("report") or self._report_entry("report")
            out.append((rid + sfx[len(out)], rid, subject, "coarse", "report", choice(entry, base), main, "open",
                        None, None, sorted(f_ids if findings else i_ids), None, split))
        if findings and impression and "impression" in self.types:
            entry = self._report_q.get("impression") or self._report_entry("impression")
            out.append((rid + sfx[len(out)], rid, subject, "coarse", "impression", choice(entry, base), impression,
                        "open", None, None, sorted(i_ids), None, split))
