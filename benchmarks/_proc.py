"""What a benchmark reads of a process from /proc (Linux): CPU seconds, its threads, and which process listens on a
port. CPU is read from the kernel's own accounting (utime + stime), so it counts what the process spent whatever
else runs on the machine: the figure to judge a server by on a shared host, where wall-clock throughput is noise.
"""

from __future__ import annotations

import os
from pathlib import Path

CLK = os.sysconf("SC_CLK_TCK")


def process_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of the process: all its threads, dead ones included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK, int(fields[12]) / CLK


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    return sum(process_times(pid))


def thread_times(pid: int) -> dict[int, tuple[str, float, float, float]]:
    """The process's live threads: tid -> (name, CPU seconds, seconds on a core, seconds waiting for one)."""
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            head, tail = (task / "stat").read_text().rsplit(")", 1)
            run_ns, wait_ns, _slices = (task / "schedstat").read_text().split()
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # the thread ended meanwhile
        fields = tail.split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK
        threads[int(task.name)] = (head.split("(", 1)[1], cpu, int(run_ns) / 1e9, int(wait_ns) / 1e9)
    return threads


def listening_pid(port: int) -> int:
    """The pid of this user's process that listens on TCP `port` (a server a benchmark started)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(proc.name)
        except (PermissionError, FileNotFoundError, ProcessLookupError):
            continue
    raise LookupError(f"no process of this user listens on port {port}")
