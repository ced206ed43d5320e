#!/usr/bin/env python3
"""Totals per kernel from the Nsight Compute sections that bench/gpu/run.sh writes into
stderr.log (`ncu --print-summary per-kernel`, one "== profile-SHAPE" step per shape).

    python3 bench/gpu/profile_summary.py OUT/stderr.log [--top 20]

For each profile step: GPU milliseconds per kernel name and launch shape (invocations x
average), its share of the forward, and the total.
"""
import re
import sys

UNIT_MS = {"ns": 1e-6, "us": 1e-3, "usecond": 1e-3, "ms": 1.0, "msecond": 1.0, "s": 1e3}


def sections(lines):
    name, body = None, []
    for line in lines:
        if line.startswith("== "):
            if name and name.startswith("profile"):
                yield name, body
            name, body = line[3:].split(":")[0].strip(), []
        else:
            body.append(line)
    if name and name.startswith("profile"):
        yield name, body


def totals(body):
    rows, kernel = [], None
    for line in body:
        m = re.match(r"\s{2}(\S+) \((.*?)\)x\((.*?)\).*Invocations (\d+)", line)
        if m:
            kernel = (m.group(1), m.group(2), int(m.group(4)))
            continue
        m = re.match(r"\s+gpu__time_duration\.sum\s+(\S+)\s+\S+\s+\S+\s+(\S+)", line)
        if m and kernel:
            avg_ms = float(m.group(2).replace(",", "")) * UNIT_MS[m.group(1)]
            rows.append((avg_ms * kernel[2], kernel))
            kernel = None
    return sorted(rows, reverse=True)


def main() -> None:
    args = sys.argv[1:]
    top = 20
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i : i + 2]
    with open(args[0], errors="replace") as f:
        lines = f.read().splitlines()
    for name, body in sections(lines):
        rows = totals(body)
        total = sum(ms for ms, _ in rows)
        print(f"{name}: {total:.2f} ms of GPU time in {sum(k[2] for _, k in rows)} launches")
        for ms, (kernel, grid, calls) in rows[:top]:
            print(f"  {ms:8.2f} ms {100 * ms / total:5.1f}%  x{calls:<4d} {kernel[:60]} ({grid})")


if __name__ == "__main__":
    main()
