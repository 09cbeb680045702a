"""How many DataLoader workers ``num_workers=auto`` means."""

from __future__ import annotations

import os

MAX_AUTO_WORKERS = 8


def auto_workers(processes_per_machine: int = 1) -> int:
    """One worker per core this process may count as its own (the machine's cores shared by the
    processes on it, e.g. one DDP rank per GPU), less one for the process itself; at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_AUTO_WORKERS, max(0, cores // max(1, int(processes_per_machine)) - 1))
