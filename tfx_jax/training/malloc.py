"""glibc malloc settings for steady-state training on CPU.

XLA CPU frees and re-allocates its large buffers every step. With glibc's
defaults those are fresh mmaps (anything over 32 MiB at most), so every step
page-faults its activations in again: the small preset's full step takes 90 ms
instead of 70 ms here (docs/benchmarks.md). One arena, no mmap and no trimming
keep freed memory for the next step, at the cost of holding on to the peak.
On a GPU or TPU host the device holds the activations, and one arena would
only make the host's threads (input pipeline, checkpointing) queue for it.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pkgutil
from importlib import metadata

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


def backend_is_cpu() -> bool:
  """Whether JAX's default backend will be the CPU, decided without starting one
  (a backend starts threads, and `tune` must come first).

  JAX_PLATFORMS (or jax_platforms), when set, names the default first.
  Otherwise JAX prefers any accelerator it can load, so the answer is yes only
  when no accelerator plugin is installed: none in the `jax_plugins` namespace
  package or entry points (CUDA, ROCm, ...), no libtpu. A host with a plugin
  but no device is answered no; set JAX_PLATFORMS=cpu there to tune.
  """
  platform = default_platform()
  return platform == 'cpu' if platform else not _accelerator_plugins()


def default_platform() -> str:
  """The first platform JAX_PLATFORMS (or jax_platforms) names, lower case; ''
  when unset. Starts nothing."""
  platforms = os.environ.get('JAX_PLATFORMS')
  try:
    import jax  # pylint: disable=g-import-not-at-top
    platforms = jax.config.jax_platforms  # Reads JAX_PLATFORMS; starts nothing.
  except ImportError:
    pass
  return (platforms or '').split(',')[0].strip().lower()


def _accelerator_plugins() -> list[str]:
  """JAX's own plugin discovery (xla_bridge.discover_pjrt_plugins), without
  importing the plugins, plus libtpu."""
  found = [entry.value for entry in metadata.entry_points(group='jax_plugins')]
  spec = importlib.util.find_spec('jax_plugins')
  if spec and spec.submodule_search_locations:
    found += [name for _, name, _ in pkgutil.iter_modules(spec.submodule_search_locations)]
  if importlib.util.find_spec('libtpu') or os.environ.get('TPU_LIBRARY_PATH'):
    found.append('libtpu')
  return found
