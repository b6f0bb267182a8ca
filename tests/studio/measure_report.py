"""Prints the studio-vs-SDK timings of `STUDIO_MEASURE=N bash tests/studio/run.sh` as a table."""

import json
import statistics
import sys

studio, sdk = (json.load(open(p)) for p in sys.argv[1:3])


def med(runs, key):
    vals = [r[key] for r in runs if r[key] is not None]
    return statistics.median(vals) / 1000 if vals else float("nan"), [round(v / 1000, 2) for v in vals]


fl = studio["firstLoad"]
print(f"studio first load: {fl['bytes']} bytes in {fl['files']} responses (headers + bodies, uncompressed)")
print("| path | first progress, median (s) | picture, median (s) | runs: picture (s) |")
print("|---|---|---|---|")
for name, d in (("studio in chromium (Send → shown)", studio), ("google-genai SDK stream", sdk)):
    f, _ = med(d["runs"], "firstProgress")
    p, runs = med(d["runs"], "picture")
    print(f"| {name} | {f:.2f} | {p:.2f} | {', '.join(map(str, runs))} |")
f1, p1 = med(studio["runs"], "firstProgress")[0], med(studio["runs"], "picture")[0]
f2, p2 = med(sdk["runs"], "firstProgress")[0], med(sdk["runs"], "picture")[0]
print(f"studio / SDK: first progress {f1 / f2:.2f}x, picture {p1 / p2:.2f}x")
