"""Read `dvc repro` output on stdin, timestamp each stage, print the split per stage and per stage kind."""

from __future__ import annotations

import re
import sys
import time
from collections import defaultdict

START = re.compile(r"Running stage '([^']+)'")


def main() -> None:
    t0 = time.perf_counter()
    marks: list[tuple[str, float]] = []
    for line in sys.stdin:
        m = START.search(line)
        if m:
            marks.append((m.group(1), time.perf_counter()))
        if line.startswith("ERROR"):
            print(line, end="", file=sys.stderr)
    end = time.perf_counter()
    per_kind: dict[str, list[float]] = defaultdict(list)
    for (name, t), nxt in zip(marks, [*(t for _, t in marks[1:]), end]):
        per_kind[name.split("@")[0]].append(nxt - t)
    print(f"{'stage':<16}{'n':>4}{'total s':>10}{'mean s':>9}")
    for kind, secs in per_kind.items():
        print(f"{kind:<16}{len(secs):>4}{sum(secs):>10.1f}{sum(secs) / len(secs):>9.2f}")
    print(f"{'before first':<16}{'':>4}{(marks[0][1] - t0) if marks else 0:>10.1f}")
    print(f"{'TOTAL':<16}{len(marks):>4}{end - t0:>10.1f}")


if __name__ == "__main__":
    main()
