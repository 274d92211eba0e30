"""Cost meters: wall-clock in a timed region (CUDA synchronised), peak GPU memory (reset per cell),
peak RSS, NFE/VJP (from :class:`priors.CountingPrior`), device name and torch version.

Units: seconds, bytes. Peak RSS is the process's resident-set high-water mark ``VmHWM`` from
``/proc/self/status``; at the start of each cell the runner resets it by writing ``5`` to
``/proc/self/clear_refs`` (Linux >= 4.0). Where that reset is not permitted the value is the
process peak since start (``reset_rss_peak`` returns False and the run's meta says so).

The cost wing also holds :mod:`.netclock` (the clock inside the network that every run's
``net_seconds`` comes from) and :mod:`.calibration` (each run's device calibration).
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path
from typing import Self

import torch

__all__ = [
    "Timer",
    "cpu_capability",
    "cpu_model",
    "current_rss_bytes",
    "device_name",
    "gpu_peak_bytes",
    "machine_info",
    "peak_rss_bytes",
    "reset_gpu_peak",
    "reset_rss_peak",
    "synchronize",
    "torch_version",
]


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work on ``device`` (no-op on CPU)."""
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(d)


class Timer:
    """Context manager measuring wall-clock seconds of its body, synchronising CUDA before the
    start and before the stop so queued kernels are counted where they ran."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.seconds = float("nan")

    def __enter__(self) -> Self:
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``; else ``platform.processor()``/``machine()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """The CPU kernel family torch dispatches to (``torch.backends.cpu.get_cpu_capability()``:
    ``DEFAULT``, ``AVX2``, ``AVX512``, ...; ``ATEN_CPU_CAPABILITY`` overrides it). Float results of
    CPU kernels can differ between capabilities in the last bits."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # pragma: no cover - very old torch
        return "unknown"


def device_name(device: torch.device | str) -> str:
    """Human-readable device: the GPU model for CUDA, else the CPU model (``/proc/cpuinfo``)."""
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(d)
    return "cpu: " + cpu_model()


def machine_info(device: torch.device | str = "cpu") -> dict[str, str]:
    """What a timing or a float result depends on: ``cpu_model``, ``cpu_capability``, ``gpu_name``
    (empty on CPU), ``torch_threads`` (intra-op threads) and ``cpu_count`` (logical CPUs usable by
    this process). All values are strings (run metadata is a string table)."""
    d = torch.device(device)
    gpu = torch.cuda.get_device_name(d) if d.type == "cuda" and torch.cuda.is_available() else ""
    try:
        ncpu = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        ncpu = os.cpu_count() or 0
    return {"cpu_model": cpu_model(), "cpu_capability": cpu_capability(), "gpu_name": gpu,
            "torch_threads": str(torch.get_num_threads()), "cpu_count": str(ncpu)}


def torch_version() -> str:
    return torch.__version__


def _proc_status_bytes(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None if unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss_bytes() -> int:
    """Current resident set of this process in bytes (``VmRSS``), 0 if unknown."""
    return _proc_status_bytes("VmRSS") or 0


def peak_rss_bytes() -> int:
    """Resident-set high-water mark of this process in bytes (``VmHWM``; falls back to
    ``getrusage`` maxrss, which is in KiB on Linux)."""
    hwm = _proc_status_bytes("VmHWM")
    return hwm if hwm is not None else int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def reset_rss_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/self/clear_refs``); True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def reset_gpu_peak(device: torch.device | str) -> None:
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(d)


def gpu_peak_bytes(device: torch.device | str) -> int | None:
    """Peak allocated CUDA memory since the last reset (bytes); None on CPU."""
    d = torch.device(device)
    if d.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(d))
    return None
