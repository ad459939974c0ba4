#!/usr/bin/env python3
"""bench_check.py - the benchmark's regression guard (make bench-check).

Compares the ratios of a fresh run (its latest.json) with the recorded
ones (bench/results/latest.json, written by a full `make bench`), measure by
measure, and fails when one has dropped by more than the tolerance (30 %
unless told): a "lower is better" ratio (a latency against its relay
baseline, target "≤ ...") that grew past old × 1.3, or a "higher is better"
one (a throughput against its baseline, target "≥ ...") that fell below
old × 0.7. Measures that only one run has, or without a ratio, are listed
and not judged. Ratios, never absolute times: both sides of a ratio are
measured in the same run on the same machine.

    bench/bench_check.py FRESH.json [--recorded bench/results/latest.json]
                         [--tolerance 0.3]

Exit status: 0 no regression, 1 a regression, 2 bad usage or input."""
import argparse
import json
import sys


def direction(measure, target):
    """+1 when a higher ratio is better, -1 when lower is, 0 unknown."""
    if measure.startswith("throughput"):
        return 1
    t = (target or "").strip()
    if t.startswith("≤") or t.startswith("<"):
        return -1
    if t.startswith("≥") or t.startswith(">"):
        return 1
    return 0


def ratios(doc):
    out = {}
    for t in doc.get("targets", []):
        if t.get("ratio") is not None:
            out[t["measure"]] = (float(t["ratio"]), t.get("target", ""))
    return out


def compare(fresh, recorded, tolerance):
    """Rows (measure, old, new, verdict) and whether any regressed."""
    rows, bad = [], False
    new, old = ratios(fresh), ratios(recorded)
    for measure in sorted(set(new) | set(old)):
        if measure not in new or measure not in old:
            rows.append((measure, old.get(measure, (None,))[0], new.get(measure, (None,))[0],
                         "not in both runs"))
            continue
        (o, target), (n, _) = old[measure], new[measure]
        d = direction(measure, target)
        if d < 0:
            worse = n > o * (1 + tolerance)
        elif d > 0:
            worse = n < o * (1 - tolerance)
        else:
            rows.append((measure, o, n, "no direction"))
            continue
        bad |= worse
        rows.append((measure, o, n, "REGRESSION" if worse else "ok"))
    return rows, bad


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fresh")
    ap.add_argument("--recorded", default="bench/results/latest.json")
    ap.add_argument("--tolerance", type=float, default=0.3)
    a = ap.parse_args(argv)
    try:
        with open(a.fresh) as f:
            fresh = json.load(f)
        with open(a.recorded) as f:
            recorded = json.load(f)
    except (OSError, ValueError) as e:
        print(f"bench_check: {e}", file=sys.stderr)
        return 2
    rows, bad = compare(fresh, recorded, a.tolerance)
    if not rows:
        print("bench_check: no ratios to compare", file=sys.stderr)
        return 2
    print(f"| measure | recorded ({recorded.get('mode', '?')}, {recorded.get('date', '?')}) "
          f"| now ({fresh.get('mode', '?')}) | verdict |")
    print("| --- | --- | --- | --- |")
    for m, o, n, v in rows:
        print(f"| {m} | {'-' if o is None else o} | {'-' if n is None else n} | {v} |")
    print(f"\ntolerance: {a.tolerance:.0%}; " +
          ("a ratio dropped beyond it" if bad else "no ratio dropped beyond it"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
