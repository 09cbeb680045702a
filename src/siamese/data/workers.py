"""How many DataLoader workers ``num_workers=auto`` means, and the DataLoader keys of ``data.*`` checked."""

from __future__ import annotations

import os

import torch

from siamese.errors import as_number, check

MAX_AUTO_WORKERS = 8


def auto_workers(processes_per_machine: int = 1) -> int:
    """One worker per core this process may count as its own (the machine's cores shared by the
    processes on it, e.g. one DDP rank per GPU), less one for the process itself; at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(MAX_AUTO_WORKERS, max(0, cores // max(1, int(processes_per_machine)) - 1))


def loader_settings(num_workers: int | str, pin_memory: bool | str, prefetch_factor: int) -> tuple[bool, int, bool, int]:
    """The DataLoader keys of ``data.*`` checked and resolved: (whether workers are ``auto``, workers,
    pin_memory, prefetch_factor). ``auto`` workers: :func:`auto_workers`; ``auto`` pinning: with CUDA."""
    auto = num_workers == "auto"  # resolved again in setup, by the processes per machine
    workers = as_number(auto_workers() if auto else num_workers, "data.num_workers", int)
    check(workers >= 0, f"data.num_workers must be 0 or more (or auto), got {workers}")
    pin = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
    prefetch = as_number(prefetch_factor, "data.prefetch_factor", int)
    check(prefetch >= 1, f"data.prefetch_factor must be at least 1, got {prefetch}")
    return auto, int(workers), pin, int(prefetch)
