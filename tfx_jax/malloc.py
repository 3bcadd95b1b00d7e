"""glibc malloc settings for steady-state training on CPU.

XLA CPU frees and re-allocates its large buffers every step. With glibc's
defaults those are fresh mmaps (anything over 32 MiB at most), so every step
page-faults its activations in again: the small preset's full step takes 90 ms
instead of 70 ms here (docs/benchmarks.md). One arena, no mmap and no trimming
keep freed memory for the next step, at the cost of holding on to the peak.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def tune() -> bool:
  """Applies the settings; False where this is not glibc. Call before threads start."""
  try:
    libc = ctypes.CDLL('libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  return all([mallopt(_M_ARENA_MAX, 1), mallopt(_M_MMAP_MAX, 0),
              mallopt(_M_TRIM_THRESHOLD, 1 << 30)])
