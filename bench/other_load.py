"""CPU time used during a run by processes that are not part of it (a test suite started by
someone else on a shared machine, say): a fairer witness than the load average, which also
counts the run's own server, PostgreSQL and load generator."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

__all__ = ["OtherLoad"]

_KTHREADD = 2  # the parent of Linux kernel threads, which are not counted


def _descendants(pid: int) -> set[int]:
    try:
        process = psutil.Process(pid)
        return {pid, *(child.pid for child in process.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


@dataclass
class OtherLoad:
    """Polls every process's CPU time; those outside this harness's process tree and
    `extra_pids()` (PostgreSQL, which is not our child) count as other work. A process first
    seen after the start counts from zero; one that lives less than `interval_s` is missed."""

    extra_pids: Callable[[], list[int]] = list
    interval_s: float = 2.0
    _first: dict[tuple[int, float], float] = field(default_factory=dict)
    _last: dict[tuple[int, float], float] = field(default_factory=dict)
    _started: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> OtherLoad:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        ours = _descendants(os.getpid()) | set(self.extra_pids())
        seen: dict[tuple[int, float], float] = {}
        for process in psutil.process_iter(["create_time", "cpu_times", "ppid"]):
            times = process.info["cpu_times"]
            kernel_thread = process.pid == _KTHREADD or process.info["ppid"] == _KTHREADD
            if process.pid in ours or times is None or kernel_thread:
                continue
            seen[(process.pid, process.info["create_time"])] = times.user + times.system
        with self._lock:
            for key, cpu in seen.items():
                self._first.setdefault(key, cpu if not self._started else 0.0)
                self._last[key] = cpu
            self._started = True

    def cpu_seconds(self) -> float:
        """CPU seconds other processes have used since the first sample."""
        with self._lock:
            return sum(cpu - self._first[key] for key, cpu in self._last.items())
