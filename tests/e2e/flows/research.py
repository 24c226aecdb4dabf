"""Test flows. Plain functions: the runner calls `getattr(obj, "func", obj)`, so the
test does not depend on the SDK's `@flow` decorator."""

from __future__ import annotations

import time
from pathlib import Path


def research_agent(topic: str, depth: int = 1) -> dict:
    return {"summary": f"{topic} researched to depth {depth}", "topic": topic, "depth": depth}


def raiser(reason: str = "boom") -> None:
    raise RuntimeError(f"flow failed: {reason}")


def sleeper(seconds: float = 60) -> str:
    time.sleep(seconds)
    return "woke up"


def flaky(counter: str, succeed_on: int = 3) -> dict:
    """Fails until it has been called `succeed_on` times; the count lives in a host file
    (pods of the local node are host processes)."""
    path = Path(counter)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt < succeed_on:
        raise ConnectionError(f"attempt {attempt} failed")
    return {"attempt": attempt}


def square(n: int) -> int:
    return n * n
