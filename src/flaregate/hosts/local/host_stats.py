"""Process figures only the local host can measure (the edge has no process of its own)."""

from __future__ import annotations

import os
import sys


class ProcessStats:
    """Resident and peak memory of this process, for the hub's snapshot and /metrics."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def sample(self) -> dict[str, float]:
        stats: dict[str, float] = {}
        try:
            with open("/proc/self/statm") as statm:  # Linux: pages, second field is resident
                stats["rss_bytes"] = int(statm.read().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            pass
        try:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            stats["peak_rss_bytes"] = peak if sys.platform == "darwin" else peak * 1024  # KiB on Linux
            stats.setdefault("rss_bytes", stats["peak_rss_bytes"])
        except (ImportError, OSError):
            pass
        return stats
