"""Wall time and peak memory of a whole command: every process it starts, summed.

`make run` is several processes at once (p2m, its temporary Prefect server, the local teacher,
a training child): the peak of any one of them understates what the machine needs. This runs a
command, sums the RSS of its process tree every 0.5 s, and prints one table row. `MemoryWatch`
is the sampler the other benchmarks use for the processes they start.

    python bench/peak_rss.py -- make run
    python bench/peak_rss.py --label "second run" -- make run
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time

import psutil


class MemoryWatch:
    """Samples the RSS of processes, each with its descendants, every `interval` s in a thread.

    Peaks in bytes: `peak_each[pid]` (a process with its tree), `peak_sum` (all trees together),
    `peak_single` (the largest single process seen).
    """

    def __init__(self, pids: list[int], interval: float = 0.5):
        self.pids, self.interval = pids, interval
        self.peak_each, self.peak_sum, self.peak_single = {p: 0 for p in pids}, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        total = 0
        for pid in self.pids:
            sizes = []
            with contextlib.suppress(psutil.Error):  # ended, or ends between listing and reading
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        sizes.append(proc.memory_info().rss)
            self.peak_each[pid] = max(self.peak_each[pid], sum(sizes))
            self.peak_single = max(self.peak_single, max(sizes, default=0))
            total += sum(sizes)
        self.peak_sum = max(self.peak_sum, total)

    def _run(self):
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


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
    with MemoryWatch([child.pid], args.interval) as memory:
        child.wait()
    seconds = time.perf_counter() - started
    print("\n| command | exit | wall s | peak RSS, all processes MB | peak RSS, largest process MB |")
    print("|---|---|---|---|---|")
    label = args.label or " ".join(command)
    total_mb, single_mb = memory.peak_sum / 1e6, memory.peak_single / 1e6
    print(f"| {label} | {child.returncode} | {seconds:.0f} | {total_mb:.0f} | {single_mb:.0f} |")
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
