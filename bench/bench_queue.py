"""The concurrency queue's cost per run at growing queue lengths (pure, no cluster):
enqueue in random creation order, then drain from the head as slots free (position
of the head, the next ten woken, removal) — what the operator does per event.

    PYTHONPATH=cli python bench/bench_queue.py
"""

from __future__ import annotations

import random
import time

from kitaru.core.queueing import HEAD, FlowQueue


def main() -> None:
    for n in (1_000, 10_000, 100_000):
        queue = FlowQueue()
        names = [f"run-{i:06d}" for i in range(n)]
        order = list(range(n))
        random.Random(0).shuffle(order)
        started = time.perf_counter()
        for i in order:
            queue.add(("2026-01-01T00:00:00Z", i), names[i], "stable" if i % 2 else None)
        enqueue = (time.perf_counter() - started) / n
        started = time.perf_counter()
        for _ in range(n):
            head = queue.head(None, True, HEAD)
            queue.position(head[-1], True)
            queue.remove(head[0])
        drain = (time.perf_counter() - started) / n
        print(
            f"{n:>7} queued: enqueue {enqueue * 1e6:5.1f} us/run, start {drain * 1e6:5.1f} us/run"
        )


if __name__ == "__main__":
    main()
