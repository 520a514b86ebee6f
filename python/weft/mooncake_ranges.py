"""weft.mooncake_ranges: the shape of Mooncake's ``get_into_ranges`` and weft's flat ranged read.

Mooncake's call is buffer-major: ``buffer_ptrs[i]`` receives, for each key ``all_keys[i][j]``,
fragments ``k`` of ``all_sizes[i][j][k]`` bytes read from ``all_src_offsets[i][j][k]`` in that
key's value and written at ``all_dst_offsets[i][j][k]`` in the buffer; ``results[i][j][k]`` is the
fragment's byte count or a negative code. weft's :meth:`weft.store.Store.get_ranges` takes one
flat list of ``(key_index, offset, size, dst)``. :func:`plan` turns the first into the second,
refusing malformed parts with -600 in their own result entries; :func:`fill` puts weft's answers
back into Mooncake's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

__all__ = ["RangePlan", "plan", "fill"]


@dataclass
class RangePlan:
    """``results`` in Mooncake's shape (every entry ``invalid`` until filled); ``keys`` and
    ``ranges`` for weft; ``at[n]``: where the answer to ``ranges[n]`` goes in ``results``."""

    results: List[List[List[int]]] = field(default_factory=list)
    keys: List[Any] = field(default_factory=list)
    ranges: List[Tuple[int, int, int, int]] = field(default_factory=list)
    at: List[Tuple[int, int, int]] = field(default_factory=list)


def _length(x: Any) -> int:
    try:
        return len(x)
    except TypeError:
        return -1


def _item(x: Any, i: int) -> Any:
    try:
        return x[i]
    except (IndexError, KeyError, TypeError):
        return None


def _natural(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def plan(buffer_ptrs: Sequence[Any], all_keys: Sequence[Sequence[Any]], all_dst_offsets: Any, all_src_offsets: Any,
         all_sizes: Any, invalid: int) -> RangePlan:
    """The flat reads of a well-formed part, and ``invalid`` in the results of a malformed one:
    the shape follows ``all_keys`` (one list per buffer, one per key) and each key's fragment
    count follows its sizes (one entry when those are not a list). A buffer whose lists do not
    match in length fails as a whole; a key whose three lists differ fails alone; a fragment with
    a negative or non-int offset or size fails alone."""
    p = RangePlan()
    slots: Dict[Any, int] = {}
    top_ok = _length(buffer_ptrs) == _length(all_keys) == _length(all_dst_offsets) == _length(all_src_offsets) == \
        _length(all_sizes)
    for i, keys in enumerate(all_keys):
        keys = list(keys)
        lists = [_item(all_dst_offsets, i), _item(all_src_offsets, i), _item(all_sizes, i)]
        buffer_ok = top_ok and _natural(buffer_ptrs[i]) and all(_length(x) == len(keys) for x in lists)
        row = []
        for j, key in enumerate(keys):
            dst, src, size = (_item(x, j) for x in lists)
            n = _length(size)
            row.append([invalid] * max(n, 1))
            if not buffer_ok or n < 0 or _length(dst) != n or _length(src) != n:
                continue
            for k in range(n):
                if not (_natural(dst[k]) and _natural(src[k]) and _natural(size[k])):
                    continue
                slot = slots.setdefault(key, len(p.keys))
                if slot == len(p.keys):
                    p.keys.append(key)
                p.ranges.append((slot, src[k], size[k], buffer_ptrs[i] + dst[k]))
                p.at.append((i, j, k))
        p.results.append(row)
    return p


def fill(p: RangePlan, answers: Sequence[Any], code: Callable[[Any], int]) -> List[List[List[int]]]:
    """``p.results`` with each planned range's answer put in its place through ``code``."""
    for (i, j, k), answer in zip(p.at, answers):
        p.results[i][j][k] = code(answer)
    return p.results
