"""Wall time and peak memory of a whole command: every process it starts, summed.

`make run` is several processes at once (p2m, its temporary Prefect server, the local teacher,
a training child): the peak of any one of them understates what the machine needs. This runs a
command, sums the RSS of its process tree every 0.5 s, and prints one table row.

    python bench/peak_rss.py -- make run
    python bench/peak_rss.py --label "second run" -- make run
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time

import psutil


def tree_rss_mb(root: psutil.Process) -> tuple[float, float]:
    """(sum of RSS over `root` and its descendants, the largest single RSS), in MB."""
    sizes = []
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # it ended between listing and reading
            sizes.append(proc.memory_info().rss / 1e6)
    return sum(sizes), max(sizes, default=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    started = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak_tree = peak_single = 0.0
    while child.poll() is None:
        total, single = tree_rss_mb(root)
        peak_tree, peak_single = max(peak_tree, total), max(peak_single, single)
        time.sleep(args.interval)
    seconds = time.perf_counter() - started
    print("\n| command | exit | wall s | peak RSS, all processes MB | peak RSS, largest process MB |")
    print("|---|---|---|---|---|")
    label = args.label or " ".join(command)
    print(f"| {label} | {child.returncode} | {seconds:.0f} | {peak_tree:.0f} | {peak_single:.0f} |")
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
