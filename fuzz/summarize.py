"""Sum up a campaign from its libFuzzer logs (fuzz/logs/<target>.log).

    python fuzz/summarize.py

Per target: runs (processes, restarts after a failure included), inputs executed,
seconds fuzzed, the last coverage figures (cov: edges, ft: features, corpus), and
the failures seen (first line of each distinct message).
"""

from __future__ import annotations

import os
import re
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))


def _clock(text: str) -> int:
    h, m, sec = (int(x) for x in text.split(":"))
    return h * 3600 + m * 60 + sec


def summarize(path: str) -> Dict[str, object]:
    processes = executed = seconds = 0
    cov = ft = corp = ""
    failures: List[str] = []
    started = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("INFO: Instrumenting"):
                continue
            m = re.match(r"=== \S+: \d+ min from (\S+)", line)
            if m:
                started = _clock(m.group(1))
            m = re.match(r"=== \S+: exit \d+ at (\S+)", line)
            if m and started is not None:
                end = _clock(m.group(1))
                seconds += (end - started) % 86400
                started = end
            m = re.match(r"stat::number_of_executed_units:\s+(\d+)", line)
            if m:
                processes += 1
                executed += int(m.group(1))
            m = re.search(r"cov: (\d+) ft: (\d+) corp: (\S+)", line)
            if m:
                cov, ft, corp = m.groups()
            if re.match(r"^\w+(Error|Violation|Exception): ", line) and line.strip() not in failures:
                failures.append(line.strip())
    return {
        "processes": processes,
        "executed": executed,
        "seconds": seconds,
        "cov": cov,
        "ft": ft,
        "corpus": corp,
        "failures": failures,
    }


def main() -> None:
    folder = os.path.join(HERE, "logs")
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".log") and name != "campaign.log":
            info = summarize(os.path.join(folder, name))
            print(f"{name[:-4]}: {info}")


if __name__ == "__main__":
    main()
