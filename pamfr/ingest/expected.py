"""The expected state of a replay: the store's patients as `pamfr patient show --json`
prints them, compared with a saved list (patients matched by their IPPs)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from pamfr.store.readside import all_patient_ids, patient_view

VOLATILE = ("id", "created_at", "updated_at")


def store_state(engine: Engine) -> list[dict[str, Any]]:
    """Every patient, as `pamfr patient show --json` prints it."""
    with engine.connect() as conn:
        return [patient_view(conn, pid) for pid in all_patient_ids(conn)]


def _ipp_keys(view: dict[str, Any]) -> list[str]:
    return sorted(
        f"{i.get('oid') or i.get('authority') or ''}|{i['value']}"
        for i in view.get("identifiers", [])
        if i.get("type") == "PI"
    )


def _label(view: dict[str, Any]) -> str:
    keys = _ipp_keys(view)
    if keys:
        return "IPP " + ", ".join(keys)
    return f"patient id {view.get('id')} (no IPP)"


def _normalize(view: dict[str, Any], ipps_by_id: dict[Any, list[str]]) -> dict[str, Any]:
    """The view without its volatile keys, ids of other patients replaced by their IPPs."""

    def ref(pid: Any) -> Any:
        return ipps_by_id.get(pid, f"unknown patient id {pid}")

    out = {k: v for k, v in view.items() if k not in VOLATILE}
    out["identifiers"] = sorted(
        view.get("identifiers", []), key=lambda i: json.dumps(i, sort_keys=True)
    )
    if view.get("merged_into") is not None:
        out["merged_into"] = ref(view["merged_into"])
    if "links" in view:
        out["links"] = sorted((ref(x) for x in view["links"] or []), key=json.dumps)
    return out


def compare_state(
    expected: list[dict[str, Any]], actual: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Differences between two lists of patient views, patients matched by their IPPs."""
    exp_ipps = {v.get("id"): _ipp_keys(v) for v in expected}
    act_ipps = {v.get("id"): _ipp_keys(v) for v in actual}
    by_ipp: dict[str, int] = {}
    by_ins: dict[str, int] = {}
    for n, view in enumerate(actual):
        for key in _ipp_keys(view):
            by_ipp.setdefault(key, n)
        if view.get("ins") and not _ipp_keys(view):
            by_ins.setdefault(view["ins"]["value"], n)
    matched: set[int] = set()
    diffs: list[dict[str, Any]] = []
    for exp in expected:
        candidates = Counter(by_ipp[k] for k in _ipp_keys(exp) if k in by_ipp)
        ins = (exp.get("ins") or {}).get("value")
        if not candidates and not _ipp_keys(exp) and ins in by_ins:
            candidates[by_ins[ins]] = 1
        found = next((n for n, _ in candidates.most_common() if n not in matched), None)
        if found is None:
            diffs.append(
                {"patient": _label(exp), "key": None, "expected": "present", "actual": None}
            )
            continue
        matched.add(found)
        e, a = _normalize(exp, exp_ipps), _normalize(actual[found], act_ipps)
        for key in sorted(set(e) | set(a)):
            if e.get(key, "<absent>") != a.get(key, "<absent>"):
                diffs.append(
                    {
                        "patient": _label(exp),
                        "key": key,
                        "expected": e.get(key, "<absent>"),
                        "actual": a.get(key, "<absent>"),
                    }
                )
    for n, view in enumerate(actual):
        if n not in matched:
            diffs.append(
                {"patient": _label(view), "key": None, "expected": None, "actual": "present"}
            )
    return diffs


def render_difference(d: dict[str, Any]) -> str:
    if d["key"] is None:
        where = "missing from the store" if d["actual"] is None else "not expected"
        return f"{d['patient']}: {where}"
    return (
        f"{d['patient']}: {d['key']}: expected {json.dumps(d['expected'], ensure_ascii=False)}, "
        f"found {json.dumps(d['actual'], ensure_ascii=False)}"
    )


def load_expected(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(v, dict) for v in data):
        raise ValueError("expected a JSON list of patient objects (pamfr patient show --json)")
    return data
