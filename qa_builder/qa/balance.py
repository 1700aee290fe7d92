"""How many pairs: the per-report cap (max_pairs_per_report) and corpus-level yes/no balancing.

Both only drop pairs, never invent them, and choose by seeded hashes so the result does not depend on
row order or worker count.
"""

from __future__ import annotations

import math
from hashlib import blake2b as _blake2b
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import CAP_PRIORITY, DEFAULT_CONFIG, UNKEYED_TYPES, YES_NO_TYPES, QAConfig


class PairCap:
    """Mixin of QAGenerator: max_pairs_per_report."""

    def _cap(self, base: int, rid: str, rows: list, vkeys: Mapping[int, str], cap: int) -> list:
        """Keep `cap` rows: round-robin over question types (CAP_PRIORITY), seeded order within a type;
        kept rows are renumbered. The seeded order hashes (question type, key), key = the pair's
        concept / region / concept:side ('' for report, impression and abnormality)."""
        def key(i: int) -> str:
            row = rows[i]
            qtype = row[4]
            if qtype == "verify":
                k = vkeys[i]
            elif qtype == "region":
                k = row[9]
            elif qtype in UNKEYED_TYPES:
                k = ""
            else:
                k = row[8]
            return self._pick(base, "cap", qtype, k)

        by_type: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_type.setdefault(row[4], []).append(i)
        queues = [sorted(by_type[t], key=key) for t in CAP_PRIORITY if t in by_type]
        keep: list[int] = []
        depth = 0
        while len(keep) < cap:
            for q in queues:
                if depth < len(q) and len(keep) < cap:
                    keep.append(q[depth])
            depth += 1
        sfx = self._sfx
        return [(rid + sfx[n],) + rows[i][1:] for n, i in enumerate(sorted(keep))]


def _balance_drop(qtypes: Sequence[str], concepts: Sequence[str | None], answers: Sequence[str],
                  qa_ids: Sequence[str], yes: str, no: str, ratio: float, seed: int) -> set[int]:
    """Positions to drop: per (question type, concept), the majority answer beyond ceil(ratio * minority),
    lowest-ranked first by a stable hash of (seed, qa_id), so the choice does not depend on row order."""
    groups: dict[tuple, tuple[list[int], list[int]]] = {}
    for i, (t, c, a) in enumerate(zip(qtypes, concepts, answers)):
        if t in YES_NO_TYPES and (a == yes or a == no):
            g = groups.get((t, c))
            if g is None:
                g = groups[(t, c)] = ([], [])
            g[a == no].append(i)
    drop: set[int] = set()
    for g_yes, g_no in groups.values():
        major = g_no if len(g_no) > len(g_yes) else g_yes
        limit = math.ceil(ratio * min(len(g_yes), len(g_no)))
        if len(major) > limit:
            prefix = f"balance\x1f{seed}\x1f"
            ranked = sorted(major, key=lambda i: _blake2b((prefix + qa_ids[i]).encode(), digest_size=8).digest())
            drop.update(ranked[limit:])
    return drop


def balance_yes_no(rows: Sequence[dict], config: QAConfig = DEFAULT_CONFIG) -> list[dict]:
    """Drop surplus majority yes/no pairs per (question type, concept); order kept, nothing added."""
    from .generate import get_generator  # the answer words of the configured language

    gen = get_generator(config)
    drop = _balance_drop([r["question_type"] for r in rows], [r["concept"] for r in rows],
                         [r["answer"] for r in rows], [r["qa_id"] for r in rows],
                         gen.yes, gen.no, config.balance_ratio, config.seed)
    return [r for i, r in enumerate(rows) if i not in drop]


def balance_table(table: pa.Table, config: QAConfig = DEFAULT_CONFIG) -> pa.Table:
    """balance_yes_no on a qa table (e.g. the workers' outputs concatenated in input order).

    Same selection as balance_yes_no; grouping is vectorised, only rows that may be dropped are
    hashed in Python.
    """
    from .generate import get_generator

    gen = get_generator(config)
    mask = pc.and_(pc.is_in(table.column("question_type"), pa.array(sorted(YES_NO_TYPES))),
                   pc.is_in(table.column("answer"), pa.array([gen.yes, gen.no])))
    idx = pc.indices_nonzero(mask).to_numpy()
    if len(idx) == 0:
        return table
    sub = table.select(["question_type", "concept", "answer"]).take(idx)
    key = pc.binary_join_element_wise(sub.column("question_type"), pc.fill_null(sub.column("concept"), ""), "\x1f")
    group = pc.dictionary_encode(key).combine_chunks().indices.to_numpy()
    is_no = pc.equal(sub.column("answer"), gen.no).to_numpy(zero_copy_only=False)
    n_groups = int(group.max()) + 1
    n_no = np.bincount(group, weights=is_no, minlength=n_groups).astype(np.int64)
    n_yes = np.bincount(group, minlength=n_groups) - n_no
    limit = np.ceil(config.balance_ratio * np.minimum(n_yes, n_no)).astype(np.int64)
    major_is_no = n_no > n_yes
    major_size = np.where(major_is_no, n_no, n_yes)
    trim = major_size > limit
    # rows in the majority class of a group that must shrink: the only candidates for dropping
    cand = np.nonzero(trim[group] & (is_no == major_is_no[group]))[0]
    if len(cand) == 0:
        return table
    qa_ids = table.column("qa_id").take(pa.array(idx[cand])).to_pylist()
    prefix = f"balance\x1f{config.seed}\x1f"
    digests = [_blake2b((prefix + q).encode(), digest_size=8).digest() for q in qa_ids]
    by_group: dict[int, list[int]] = {}
    for j, gid in enumerate(group[cand].tolist()):
        by_group.setdefault(gid, []).append(j)
    keep = np.ones(table.num_rows, dtype=bool)
    for gid, js in by_group.items():
        js.sort(key=digests.__getitem__)
        for j in js[int(limit[gid]):]:
            keep[idx[cand[j]]] = False
    return table.filter(pa.array(keep))
