"""What the benchmarks record about where they ran: the CPU, and how busy the
other processes kept it (`python benchmarks/X.py` finds this module next to it)."""

from __future__ import annotations

import json
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


def print_load(load_before: float, load_after: float, others: float | None) -> None:
  """The machine line, and a warning when other processes competed for the CPU."""
  others_text = 'unknown' if others is None else f'{others:.2f} cores'
  print(f'machine: {describe()}; load average {load_before:.2f} before, '
        f'{load_after:.2f} after; other processes used {others_text}')
  if others is not None and others > 0.1:
    print('WARNING: other processes competed for the CPU; timings are unreliable.')


def write_json(path: str, payload: dict, load_before: float, load_after: float,
               others: float | None) -> None:
  """`payload` with the machine and its load, written atomically to `path`."""
  payload = {'machine': describe(), **payload,
             'load_average': [round(load_before, 2), round(load_after, 2)],
             'other_processes_cores': None if others is None else round(others, 3)}
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=1)
  os.replace(tmp, path)
