"""What the benchmarks record about where they ran: the CPU, and how busy the
other processes kept it (`python benchmarks/X.py` finds this module next to it)."""

from __future__ import annotations

import os
import platform


def describe() -> str:
  """'AMD EPYC (family 26, model 2), AVX-512, 2 cores, Linux x86_64'."""
  info = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        info.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  model = info.get('model name', platform.processor())
  if 'cpu family' in info:
    model += f' (family {info["cpu family"]}, model {info.get("model", "?")})'
  if 'avx512f' in info.get('flags', '').split():
    model += ', AVX-512'
  return f'{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}'


def busy_cpu_seconds() -> float | None:
  """CPU seconds all processes have used since boot (Linux /proc/stat)."""
  try:
    with open('/proc/stat') as f:
      fields = [int(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle, iowait
  return (sum(fields[:8]) - idle) / os.sysconf('SC_CLK_TCK')
