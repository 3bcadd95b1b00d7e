"""A run's metrics: JSON lines and TensorBoard events, and the stop on NaN."""

from __future__ import annotations

import json
import math
import os

from tfx_jax import files
from tfx_jax.errors import UserError
from tfx_jax.training import tensorboard


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
  """Per-run metrics as RUN_DIR/metrics.jsonl and TensorBoard events in RUN_DIR/tb:
  `files.Log`s, so on gs:// they are written whole at `flush` (before each
  checkpoint) and `close`, never rewritten per line."""

  def __init__(self, run_dir: str, start_step: int):
    self._log = files.Log(  # Drop lines past the resumed checkpoint.
        os.path.join(run_dir, 'metrics.jsonl'),
        keep=lambda line: bool(line.strip()) and json.loads(line)['step'] <= start_step)
    self._tb = tensorboard.SummaryWriter(os.path.join(run_dir, 'tb'))

  def write(self, step: int, kind: str, metrics: dict) -> None:
    self._log.write((json.dumps({'step': step, 'kind': kind, **metrics})
                     + '\n').encode())
    for name, value in metrics.items():
      self._tb.scalar(f'{kind}/{name}', value, step)

  def flush(self) -> None:
    self._log.flush()
    self._tb.flush()

  def close(self) -> None:
    self._log.close()
    self._tb.close()
