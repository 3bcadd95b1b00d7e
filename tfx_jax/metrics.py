"""A run's metrics: JSON lines and TensorBoard events, and the stop on NaN."""

from __future__ import annotations

import json
import math
import os

from tfx_jax import files, tensorboard
from tfx_jax.errors import UserError


class DivergedError(UserError):
  """The loss became NaN or infinite."""


def check_finite(fetched: list[dict], run_id: str, first_step: int) -> None:
  """Raises DivergedError naming the metric and step of the first non-finite value."""
  for i, metrics in enumerate(fetched):
    for name, value in sorted(metrics.items()):
      if not math.isfinite(float(value)):
        raise DivergedError(
            f'Run {run_id}: {name} is {float(value)} at step {first_step + i}. '
            f'Lower the learning rate (--config.lr) with a new --workdir, or '
            f'check the data.')


class MetricsWriter:
  """Per-run metrics as RUN_DIR/metrics.jsonl and TensorBoard events in RUN_DIR/tb."""

  def __init__(self, run_dir: str, start_step: int):
    self.path = os.path.join(run_dir, 'metrics.jsonl')
    if files.exists(self.path):  # Drop lines past the resumed checkpoint.
      lines = files.read_text(self.path).splitlines(keepends=True)
      files.atomic_write(self.path, ''.join(
          l for l in lines if l.strip() and json.loads(l)['step'] <= start_step))
    self._tb = tensorboard.SummaryWriter(os.path.join(run_dir, 'tb'))

  def write(self, step: int, kind: str, metrics: dict) -> None:
    files.append(self.path, (json.dumps({'step': step, 'kind': kind, **metrics})
                             + '\n').encode())
    for name, value in metrics.items():
      self._tb.scalar(f'{kind}/{name}', value, step)
    self._tb.flush()

  def close(self) -> None:
    self._tb.close()
