"""The workdir's layout, local or gs://:

  WORKDIR/config.json     the config snapshot; a different config is refused
  WORKDIR/groups.json     the model's transferable layer groups, in order
  WORKDIR/results.csv     a row per finished run, rebuilt after every run
  WORKDIR/runs/<run_id>/  checkpoints/, metrics.jsonl, tb/, and result.json
                          once the run is finished
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from tfx_jax import config as config_lib
from tfx_jax import files
from tfx_jax.errors import UserError
from tfx_jax.grid import results
from tfx_jax.training import checkpoints


class Workdir:
  """One workdir: its runs' directories, which runs are finished, results.csv."""

  def __init__(self, path: str):
    self.path = path
    self.is_main = jax.process_index() == 0
    self._finished: set[str] = set()  # Known finished: never re-checked in storage.

  def run_dir(self, run_id: str) -> str:
    return os.path.join(self.path, 'runs', run_id)

  def checkpoint_dir(self, run_id: str) -> str:
    return os.path.join(self.run_dir(run_id), 'checkpoints')

  def _result_path(self, run_id: str) -> str:
    return os.path.join(self.run_dir(run_id), 'result.json')

  def finished(self, run_id: str) -> bool:
    """Whether the run has its result.json; process 0 decides for all."""
    if run_id in self._finished:
      return True
    done = _agreed(files.exists(self._result_path(run_id)))
    if done:
      self._finished.add(run_id)
    return done

  def has_checkpoint(self, run_id: str, step: int) -> bool:
    """Whether the run's checkpoint of `step` is there (a workdir copied
    without checkpoints, as docs/fashion_mnist, holds results alone); process
    0 decides for all."""
    return _agreed(checkpoints.has_step(self.checkpoint_dir(run_id), step))

  def save_result(self, result: results.Result) -> None:
    """Marks the run finished: its result.json, written whole by process 0."""
    if self.is_main:
      files.atomic_write_json(self._result_path(result.run_id), result.as_dict())
    self._finished.add(result.run_id)

  def write_results(self, first: list[str]) -> str:
    """WORKDIR/results.csv: a row per finished run of the workdir.

    The runs `first` (a grid's, in grid order), then the others run into the
    same workdir (other experiments or splits), by run id. Rebuilt from the
    runs' result.json files until a rebuild after the write matches it, so
    sweep shards sharing the workdir, on disk or gs://, never drop each
    other's rows (no lock: see files.write_settled).
    """
    path = os.path.join(self.path, 'results.csv')
    if not self.is_main:
      return path

    def render() -> str:
      others = [r for r in files.listdir(os.path.join(self.path, 'runs'))
                if r not in first]
      found = []
      for run_id in first + others:
        result_path = self._result_path(run_id)
        if files.exists(result_path):
          found.append(results.from_dict(json.loads(files.read_text(result_path)),
                                         result_path))
      return results.to_csv(found)

    files.write_settled(path, render)
    return path

  def prepare(self, config: ml_collections.ConfigDict, groups: tuple[str, ...] = ()) -> None:
    """Create the workdir and snapshot the config and the model's transferable
    groups (for the report); refuse a different config."""
    try:
      files.makedirs(self.path)
      probe = os.path.join(self.path, f'.write-test-{os.getpid()}')
      files.atomic_write(probe, 'ok')
      epath.Path(probe).unlink()
    except OSError as e:
      raise UserError(f'Cannot write to workdir {self.path!r} ({e.strerror}); '
                      f'choose a writable --workdir.') from None
    snapshot = json.loads(config.to_json_best_effort())
    path = os.path.join(self.path, 'config.json')
    if files.exists(path):
      differ = config_lib.differing_fields(json.loads(files.read_text(path)), snapshot)
      if differ:
        raise UserError(
            f'Workdir {self.path!r} holds runs of a different config (it differs '
            f'in {", ".join(differ)}). Use a new --workdir, or delete '
            f'{self.path!r} to start over.')
    if self.is_main:
      files.atomic_write_json(path, snapshot)
      if groups:
        files.atomic_write_json(os.path.join(self.path, results.GROUPS_FILE),
                                {'groups': list(groups)})


def _agreed(flag: bool) -> bool:
  """Process 0's `flag`, on every process."""
  if jax.process_count() > 1:
    flag = bool(multihost_utils.broadcast_one_to_all(np.array(flag)))
  return flag
