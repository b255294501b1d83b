#!/usr/bin/env python3
"""Scores vramscope's findings on the labeled corpus (manifest.json beside this file).

    score.py --vramscope build/vramscope [--set all|tuning|heldout] [--manifest FILE] [--root DIR] [--json OUT]

--set scores one set of the manifest: tuning (entries without "set", the traces the rules were tuned on),
heldout (entries with "set": "heldout", recorded from heldout.py after the tuning), or all (the default).

For every manifest entry whose trace file exists (the others are listed as missing, not scored), runs
`vramscope report --db PATH --format json` and judges it: the rank-1 finding's kind ("none" when there is
no finding) must be one of expect_first, no kind in must_not may fire anywhere in the findings, and, with
leak_process, the leak_growth findings must name exactly the pid of the one process whose command line
contains that string. Prints one line per trace, the confusion table (label x first finding) and each
kind's precision and recall, with their definitions. Exit code: 0 when every scored trace is right, 1 when
one is wrong, 2 when nothing could be scored or the manifest is malformed. Standard library only.
"""
import argparse
import json
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETS = ("tuning", "heldout")  # an entry's "set"; absent: tuning
NONE = "none"  # the first "kind" of a trace with no finding
ERROR = "error"  # the first "kind" of a trace whose report failed
REPORT_TIMEOUT_S = 120

DEFINITIONS = """\
Definitions, over the scored traces:
  K predicted  K is the rank-1 finding's kind (none: no finding at all)
  K expected   the trace's expect_first is exactly [K]
  precision    traces judged right among those where K was predicted (right: rank 1 acceptable, no
               must_not kind fired, leak_process held)
  recall       traces where K came first among those where K was expected
  n/a          the denominator is 0"""


def load_manifest(path):
    """The manifest, checked: every entry has its fields, and names only kinds the manifest lists."""
    doc = json.loads(Path(path).read_text())
    kinds = set(doc["kinds"]) | {NONE}
    errors = []
    names = Counter(t.get("name") for t in doc["traces"])
    for t in doc["traces"]:
        where = f"{path}: trace {t.get('name')!r}"
        for field in ("name", "path", "label", "description", "expect_first", "must_not", "why"):
            if field not in t:
                errors.append(f"{where}: no {field}")
        if names[t.get("name")] > 1:
            errors.append(f"{where}: name used {names[t.get('name')]} times")
        for field in ("expect_first", "must_not"):
            unknown = set(t.get(field, [])) - kinds
            if unknown:
                errors.append(f"{where}: {field} names unknown kinds {sorted(unknown)} (the manifest's kinds: "
                              f"{', '.join(doc['kinds'])}, or {NONE})")
        if t.get("set", SETS[0]) not in SETS:
            errors.append(f"{where}: set {t.get('set')!r} is not one of {', '.join(SETS)} (absent: {SETS[0]})")
        if not t.get("expect_first"):
            errors.append(f"{where}: expect_first is empty")
        both = set(t.get("expect_first", [])) & set(t.get("must_not", []))
        if both:
            errors.append(f"{where}: {sorted(both)} both expected first and forbidden")
    if errors:
        print("score.py: malformed manifest:\n  " + "\n  ".join(errors), file=sys.stderr)
        sys.exit(2)
    return doc


def report(vramscope, db):
    """`vramscope report --format json` on db: its findings object, or an error string."""
    try:
        run = subprocess.run([vramscope, "report", "--db", str(db), "--format", "json"],
                             capture_output=True, text=True, timeout=REPORT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"vramscope report failed: {e}"
    if run.returncode != 0:
        return None, f"vramscope report exited {run.returncode}: {run.stderr.strip()[-300:]}"
    try:
        return json.loads(run.stdout)["findings"], None
    except (ValueError, KeyError) as e:
        return None, f"vramscope report printed no findings JSON ({e})"


def leak_process_problem(db, session_id, substring, findings):
    """Why leak_process does not hold, or None: the leak_growth pids must be exactly the pid of the one
    process of the session whose cmdline contains substring."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT pid, COALESCE(cmdline, '') FROM processes WHERE session_id = ?",
                           (session_id,)).fetchall()
    finally:
        con.close()
    matches = sorted({pid for pid, cmdline in rows if substring in cmdline})
    if len(matches) != 1:
        return f"leak_process {substring!r} matches {len(matches)} processes of session {session_id}, not 1"
    named = sorted({f["pid"] for f in findings if f["kind"] == "leak_growth"})
    if named != matches:
        return (f"leak_growth names pids {named or 'none'}, expected exactly pid {matches[0]} "
                f"(cmdline contains {substring!r})")
    return None


def judge(entry, db, vramscope):
    """One trace's result: first kind, fired kinds, right or not, and why not."""
    result = {"name": entry["name"], "set": entry.get("set", SETS[0]), "label": entry["label"], "path": entry["path"],
              "expect_first": entry["expect_first"], "first": ERROR, "fired": [], "right": False, "reasons": []}
    out, error = report(vramscope, db)
    if error:
        result["reasons"].append(error)
        return result
    findings = out["findings"]
    result["first"] = findings[0]["kind"] if findings else NONE
    result["fired"] = sorted({f["kind"] for f in findings})
    if out.get("left_out", 0) > 0:
        result["notes"] = [f"{out['left_out']} findings beyond the report's limit were not checked against must_not"]
    reasons = result["reasons"]
    if result["first"] not in entry["expect_first"]:
        reasons.append(f"first is {result['first']}, expected {' or '.join(entry['expect_first'])}")
    forbidden = sorted(set(result["fired"]) & set(entry["must_not"]))
    if forbidden:
        ranks = [f"{f['kind']} (rank {f['rank']})" for f in findings if f["kind"] in forbidden]
        reasons.append("must not fire: " + ", ".join(ranks))
    if entry.get("leak_process"):
        problem = leak_process_problem(db, out["session_id"], entry["leak_process"], findings)
        if problem:
            reasons.append(problem)
    result["right"] = not reasons
    return result


def ratio(num, den):
    return "n/a" if den == 0 else f"{num / den:.2f}"


def tables(results, kind_order):
    """The confusion table (label x first kind) and each kind's precision and recall."""
    labels = list(dict.fromkeys(r["label"] for r in results))
    firsts = {r["first"] for r in results}
    columns = [k for k in kind_order if k in firsts] + sorted(firsts - set(kind_order))
    confusion = {label: Counter(r["first"] for r in results if r["label"] == label) for label in labels}
    per_kind = {}
    for k in dict.fromkeys([*kind_order, *sorted(firsts)]):
        predicted = [r for r in results if r["first"] == k]
        expected = [r for r in results if r["expect_first"] == [k]]
        if not predicted and not expected:
            continue
        right = sum(r["right"] for r in predicted)
        found = sum(r["first"] == k for r in expected)
        per_kind[k] = {"predicted": len(predicted), "right": right, "precision": ratio(right, len(predicted)),
                       "expected": len(expected), "found": found, "recall": ratio(found, len(expected))}
    return labels, columns, confusion, per_kind


def print_tables(results, labels, columns, confusion, per_kind):
    width = max([len("label")] + [len(label) for label in labels])
    print(f"\nConfusion: label x first finding (scored traces: {len(results)})")
    print(f"{'label':<{width}}  " + "  ".join(columns) + "  right")
    for label in labels:
        row = confusion[label]
        n = sum(row.values())
        right = sum(r["right"] for r in results if r["label"] == label)
        cells = "  ".join(f"{row.get(c, 0) or '.':>{len(c)}}" for c in columns)
        print(f"{label:<{width}}  {cells}  {right}/{n}")
    kw = max([len("kind")] + [len(k) for k in per_kind])
    print("\nPer finding kind")
    print(f"{'kind':<{kw}}  predicted  right  precision  expected  found  recall")
    for k, v in per_kind.items():
        print(f"{k:<{kw}}  {v['predicted']:>9}  {v['right']:>5}  {v['precision']:>9}  "
              f"{v['expected']:>8}  {v['found']:>5}  {v['recall']:>6}")
    print(DEFINITIONS)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vramscope", required=True, help="the vramscope binary")
    ap.add_argument("--manifest", default=str(HERE / "manifest.json"))
    ap.add_argument("--root", default=str(HERE.parent.parent), help="what manifest paths are relative to")
    ap.add_argument("--json", metavar="OUT", help="also write the results and tables as JSON")
    ap.add_argument("--set", choices=("all", *SETS), default="all",
                    help="score only this set of the manifest (absent from an entry: tuning); default all")
    a = ap.parse_args()
    doc = load_manifest(a.manifest)
    root = Path(a.root)
    entries = [t for t in doc["traces"] if a.set == "all" or t.get("set", SETS[0]) == a.set]
    print(f"set: {a.set} ({len(entries)} of the manifest's {len(doc['traces'])} traces)")
    results, missing = [], []
    for entry in entries:
        db = root / entry["path"]
        if not db.is_file():
            missing.append(entry["name"])
            continue
        r = judge(entry, db, a.vramscope)
        results.append(r)
        verdict = "right" if r["right"] else "WRONG"
        line = f"{verdict:<5}  {r['name']:<34} {r['label']:<22} {r['first']}"
        if r["reasons"]:
            line += "  -- " + "; ".join(r["reasons"])
        print(line)
        for note in r.get("notes", []):
            print(f"       note: {note}")
    if missing:
        print(f"\nmissing ({len(missing)}, not scored): {' '.join(missing)}")
    kind_order = [*doc["kinds"], NONE]
    unknown = sorted({k for r in results for k in r["fired"]} - set(kind_order))
    if unknown:
        print(f"note: kinds fired that the manifest does not list: {', '.join(unknown)}")
    right = sum(r["right"] for r in results)
    if results:
        labels, columns, confusion, per_kind = tables(results, kind_order)
        print_tables(results, labels, columns, confusion, per_kind)
    else:
        labels, columns, confusion, per_kind = [], [], {}, {}
    print(f"\n{right} of {len(results)} scored traces right" + (f"; {len(missing)} missing" if missing else "")
          + f" (set: {a.set})")
    if a.json:
        Path(a.json).write_text(json.dumps({
            "vramscope": a.vramscope, "manifest": a.manifest, "set": a.set, "scored": len(results), "right": right,
            "missing": missing, "traces": results,
            "confusion": {label: dict(confusion[label]) for label in labels}, "kinds": per_kind,
            "definitions": DEFINITIONS}, indent=1))
    if not results:
        print(f"score.py: no trace of the manifest's set {a.set} exists under {root}", file=sys.stderr)
        sys.exit(2)
    sys.exit(0 if right == len(results) else 1)


if __name__ == "__main__":
    main()
