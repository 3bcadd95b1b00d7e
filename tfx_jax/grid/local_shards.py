"""The sweep as several processes on one machine (`--local_shards`), each pinned
to its share of the CPU cores: on the CPU backend a small network trains faster
one process a core than in one process over every core (XLA splits a small
convolution's work poorly across threads). On CUDA GPUs, each process sees
only its share of the GPUs (CUDA_VISIBLE_DEVICES), one GPU each by default:
a small network keeps its own GPU busy, where one process would spread every
net over all of them.

Each process is the main job as sweep shard K of N (`--config.sweep`), with
the report left to this one, which waits for them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from tfx_jax import progress
from tfx_jax.errors import UserError
from tfx_jax.training import malloc, preemption

# A process's resident memory on Fashion-MNIST (`narrow` net): 0.67-0.73 GB.
MEMORY_PER_SHARD = 1 << 30


def allowed_cpus() -> list[int]:
  if not hasattr(os, 'sched_getaffinity'):
    raise UserError('--local_shards pins processes to CPUs, which needs Linux; '
                    'leave it at 1 here.')
  return sorted(os.sched_getaffinity(0))


def available_memory() -> int | None:
  """MemAvailable from /proc/meminfo in bytes; None where there is none."""
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def count(requested: int, cpus: Sequence[int], memory: int | None) -> int:
  """How many processes: `requested`, or for 0 one per CPU that memory allows."""
  if requested < 0:
    raise UserError(f'--local_shards must be 0 (one per CPU) or more, got {requested}.')
  if requested > len(cpus):
    raise UserError(f'--local_shards={requested} needs as many CPUs, and this process '
                    f'may use {len(cpus)}; pass at most {len(cpus)}, or 0 for one per CPU.')
  if requested:
    return requested
  fit = len(cpus) if memory is None else memory // MEMORY_PER_SHARD
  return max(1, min(len(cpus), fit))


def visible_gpus() -> list[str] | None:
  """The CUDA GPUs this process may use, as CUDA_VISIBLE_DEVICES names them
  (indices or UUIDs; else nvidia-smi's indices), when JAX's backend will be
  CUDA; None for any other backend. Starts no JAX backend."""
  if malloc.backend_is_cpu() or malloc.default_platform() not in ('', 'cuda', 'gpu'):
    return None
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    return [name.strip() for name in visible.split(',') if name.strip()]
  try:
    listed = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True,
                            timeout=60).stdout
  except (OSError, subprocess.TimeoutExpired):
    return None
  gpus = [line for line in listed.splitlines() if line.startswith('GPU ')]
  return [str(k) for k in range(len(gpus))] or None


def resolve(requested: int, distributed: bool,
            num_sweep_shards: int) -> tuple[int, list[str] | None]:
  """--local_shards resolved, before any JAX backend starts: how many processes,
  and the GPUs they share out (None on the CPU). 0 is one per CPU that memory
  allows on the CPU backend, one per GPU on CUDA GPUs, 1 on TPUs."""
  if requested < 0:
    raise UserError(f'--local_shards must be 0 (one per CPU or GPU) or more, got {requested}.')
  if requested == 1:
    return 1, None
  on_cpu = malloc.backend_is_cpu()
  gpus = None if on_cpu else visible_gpus()
  if gpus is None and not on_cpu:
    if requested == 0:
      return 1, None
    raise UserError(f'--local_shards={requested} is for the CPU backend and CUDA GPUs; '
                    f'on TPUs one process uses every device: drop it.')
  if distributed or num_sweep_shards > 1:
    raise UserError('--local_shards runs the sweep\'s shards itself; drop it, '
                    'or drop --multihost and --config.sweep.')
  if gpus is None:
    return count(requested, allowed_cpus(), available_memory()), None
  if requested > len(gpus):
    raise UserError(f'--local_shards={requested} needs as many GPUs, and this process '
                    f'sees {len(gpus)} (CUDA_VISIBLE_DEVICES or nvidia-smi); pass at most '
                    f'{len(gpus)}, or 0 for one per GPU.')
  n = requested or len(gpus)
  return (n, gpus) if n > 1 else (1, None)


def shard_env(environ: dict[str, str], gpus: Sequence[str] | None) -> dict[str, str]:
  """The environment of a shard process: `environ`, with only its own GPUs
  visible when it has some."""
  env = dict(environ)
  if gpus is not None:
    env['CUDA_VISIBLE_DEVICES'] = ','.join(gpus)
  return env


def cpu_groups(cpus: Sequence[int], n: int) -> list[list[int]]:
  """`cpus` in n contiguous groups whose sizes differ by at most one."""
  size, extra = divmod(len(cpus), n)
  groups, start = [], 0
  for k in range(n):
    end = start + size + (k < extra)
    groups.append(list(cpus[start:end]))
    start = end
  return groups


def cpu_list(cpus: Sequence[int]) -> str:
  """'0-3,6' for CPUs 0, 1, 2, 3, 6 (taskset's form)."""
  ranges, cpus = [], sorted(cpus)
  for cpu in cpus:
    if ranges and cpu == ranges[-1][1] + 1:
      ranges[-1][1] = cpu
    else:
      ranges.append([cpu, cpu])
  return ','.join(f'{a}-{b}' if b > a else str(a) for a, b in ranges)


def pinning() -> str:
  """', pinned to CPUs L' when this process may not use every CPU, else ''."""
  if not hasattr(os, 'sched_getaffinity'):
    return ''
  mine = os.sched_getaffinity(0)
  return f', pinned to CPUs {cpu_list(mine)}' if len(mine) < (os.cpu_count() or 0) else ''


def shard_command(argv: Sequence[str], n: int, k: int) -> list[str]:
  """The main job as sweep shard k of n, without a report (absl: the last
  occurrence of a flag wins, so these override the user's). A base another
  shard trains is looked for every second: on a local disk that is cheap."""
  return [sys.executable, '-m', 'tfx_jax.main', *argv, '--local_shards=1',
          f'--config.sweep.num_shards={n}', f'--config.sweep.shard={k}',
          '--config.sweep.poll_seconds=1', '--config.report=False']


def run(argv: Sequence[str], n: int, gpus: Sequence[str] | None = None) -> None:
  """Runs shards 0..n-1 of the sweep, each pinned to its CPUs (and seeing
  only its share of `gpus`, when given), until all end.

  SIGTERM and SIGINT (Ctrl-C) are passed on: each shard checkpoints and stops,
  and this process exits as they do. When a shard fails, the others are
  stopped with SIGTERM and this process exits with its code.
  """
  cpus = allowed_cpus()  # Fewer CPUs than GPU shards: one CPU each, shared round robin.
  groups = cpu_groups(cpus, n) if n <= len(cpus) else [[cpus[k % len(cpus)]] for k in range(n)]
  gpu_groups = cpu_groups(gpus, n) if gpus else [None] * n
  print(f'The sweep as {n} processes on this machine, each printing its own '
        f'progress: ' + ', '.join(
            f'shard {k} on ' + (f'GPU {",".join(gpu)} and ' if gpu else '')
            + f'CPUs {cpu_list(g)}' for k, (g, gpu) in enumerate(zip(groups, gpu_groups)))
        + '.', flush=True)
  start, procs, failed, received = time.perf_counter(), [], None, []

  def stop(signum=signal.SIGTERM):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  def on_signal(signum, _frame):
    received.append(signum)
    stop(signum)

  previous = {s: signal.signal(s, on_signal) for s in preemption.SIGNALS}
  try:
    mask = os.sched_getaffinity(0)
    try:
      for k, group in enumerate(groups):
        os.sched_setaffinity(0, group)  # Inherited by the child; no preexec_fn.
        procs.append(subprocess.Popen(shard_command(argv, n, k),
                                      env=shard_env(os.environ, gpu_groups[k])))
    finally:
      os.sched_setaffinity(0, mask)
    while [p.poll() for p in procs].count(None):  # Polls every one.
      if failed is None:
        failed = next((k for k, p in enumerate(procs) if p.returncode not in (None, 0)), None)
        if failed is not None:
          stop()
      time.sleep(0.5)
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  codes = [p.returncode for p in procs]
  failed = failed if failed is not None else next((k for k, c in enumerate(codes) if c), None)
  if failed is None:
    print(f'All {n} sweep shards done in {progress.fmt_time(time.perf_counter() - start)}.',
          flush=True)
    return
  code = codes[failed] if codes[failed] > 0 else 128 - codes[failed]  # -N: signal N.
  if received or code in (preemption.EXIT_CODE, preemption.INTERRUPTED):
    code = 128 + received[0] if received else code
    print('Stopped: every shard saved a checkpoint; run the same command again '
          'to resume.', file=sys.stderr)
  else:
    print(f'Sweep shard {failed} of {n} failed (exit code {code}; its message is '
          f'above); the others were stopped at a checkpoint. Fix it and run the '
          f'same command again: finished runs are kept.', file=sys.stderr)
  sys.exit(code)
