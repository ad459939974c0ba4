"""bench_check_test.py - bench/bench_check.py judges ratios as it says:
a lower-is-better ratio that grew past the tolerance and a throughput
ratio that fell past it are regressions; smaller moves, measures only one
run has, and better numbers are not."""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK = os.path.join(HERE, "..", "bench", "bench_check.py")


def doc(mode, **ratios):
    targets = []
    for name, (ratio, target) in ratios.items():
        targets.append({"measure": name.replace("_", " "), "ratio": ratio, "target": target})
    return {"mode": mode, "date": "d", "targets": targets}


def run(fresh, recorded):
    with tempfile.TemporaryDirectory() as d:
        a, b = os.path.join(d, "fresh.json"), os.path.join(d, "rec.json")
        for path, content in ((a, fresh), (b, recorded)):
            with open(path, "w") as f:
                json.dump(content, f)
        p = subprocess.run([sys.executable, CHECK, a, "--recorded", b],
                           capture_output=True, text=True)
        return p.returncode, p.stdout


def expect(cond, what, out):
    if not cond:
        print(f"FAIL: {what}\n{out}")
        sys.exit(1)


rec = doc("full", sync_p50=(2.0, "≤ 1.5×"), throughput_x=(0.5, "≥ 0.5×"),
          throughput_one=(0.4, "(per node)"), only_old=(1.0, "≤ 2×"))
rc, out = run(doc("quick", sync_p50=(2.5, "≤ 1.5×"), throughput_x=(0.4, "≥ 0.5×"),
                  throughput_one=(0.3, "(per node)")), rec)
expect(rc == 0, "moves within 30 % pass", out)
expect("not in both runs" in out, "a measure of one run only is listed", out)
rc, out = run(doc("quick", sync_p50=(2.7, "≤ 1.5×"), throughput_x=(0.5, "≥ 0.5×")), rec)
expect(rc == 1 and out.count("REGRESSION") == 1, "a latency ratio 35 % worse fails", out)
rc, out = run(doc("quick", sync_p50=(1.0, "≤ 1.5×"), throughput_x=(0.34, "≥ 0.5×")), rec)
expect(rc == 1 and "throughput x | 0.5 | 0.34 | REGRESSION" in out,
       "a throughput ratio 32 % lower fails", out)
rc, out = run(doc("quick", throughput_one=(0.2, "(per node)")), rec)
expect(rc == 1, "a throughput without a target's direction is still higher-is-better", out)
rc, out = run(doc("quick"), doc("full"))
expect(rc == 2, "nothing to compare is bad input", out)
print("bench_check_test: ok")
