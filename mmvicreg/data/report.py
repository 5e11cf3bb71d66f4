"""``merge_reports``: one source's ``data_report()`` from every process (data-parallel rank), totalled.

Two kinds of report come in:

* a map-style source's (``skipped_while_loading`` present): what was left out when the source was built (missing
  files, ``verify``, captions) is the same on every rank, since every rank builds the same source; what was left
  out at load time differs, and one image may be met by several ranks (and, over epochs, by all of them), so the
  load-time skips are the union of each rank's ``[image, reason]`` list, each image once;
* a streamed source's (no such list): each rank reads its own part of the stream, so the counts per reason add up.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence


def _counts(reports: Sequence[Mapping[str, Any]], key: str) -> collections.Counter:
    total: collections.Counter = collections.Counter()
    for report in reports:
        total.update(report.get(key) or {})
    return total


def _merge_streamed(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out = dict(reports[0])
    for kind in ("images", "captions"):
        if f"skipped_{kind}" in out:
            reasons = _counts(reports, f"skipped_{kind[:-1]}_reasons")
            out[f"skipped_{kind}"] = sum(int(r.get(f"skipped_{kind}", 0)) for r in reports)
            out[f"skipped_{kind[:-1]}_reasons"] = dict(sorted(reasons.items()))
    return out


def _merge_map_style(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    first = reports[0]
    own = [tuple(entry) for entry in first["skipped_while_loading"]]
    built = _counts([first], "skipped_image_reasons") - collections.Counter(reason for _, reason in own)
    loading: dict[str, str] = {}
    for report in reports:
        for image, reason in report.get("skipped_while_loading") or ():
            loading.setdefault(str(image), str(reason))
    reasons = built + collections.Counter(loading.values())
    out = dict(first)
    out["skipped_images"] = sum(reasons.values())
    out["skipped_image_reasons"] = dict(reasons)
    out["skipped_while_loading"] = [[image, reason] for image, reason in loading.items()]
    return out


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The data report of one source over every process, from each process's ``source.data_report()`` (e.g.
    gathered with ``accelerator.gather_object``); see the module docstring for how each kind is totalled.

    ``source`` and ``samples`` (the whole source's, the same on every rank) come from the first report.
    Raises ValueError when ``reports`` is empty or mixes reports of different sources.
    """
    reports = [r for r in reports if r]
    if not reports:
        raise ValueError("merge_reports needs at least one data report (one per process)")
    names = {r.get("source") for r in reports}
    if len(names) > 1:
        raise ValueError(f"merge_reports got reports of different sources {sorted(map(str, names))}; merge one "
                         f"source's reports (one per process) at a time")
    if "skipped_while_loading" in reports[0]:
        return _merge_map_style(reports)
    return _merge_streamed(reports)
