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
from tfx_jax import errors, files
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
    """Whether the run has a readable result.json; process 0 decides for all.

    An unreadable one (truncated, edited) is moved aside with a warning: the
    run is unfinished, and resumes from its newest checkpoint."""
    if run_id in self._finished:
      return True
    done = _agreed(self.is_main and self.read_result(run_id) is not None)
    if done:
      self._finished.add(run_id)
    return done

  def read_result(self, run_id: str) -> results.Result | None:
    """The run's result.json; None when it has none or an unreadable one,
    which is then moved aside (`result-unreadable.json`) with a warning."""
    path = self._result_path(run_id)
    if not files.exists(path):
      return None
    try:
      return results.from_dict(json.loads(files.read_text(path)), path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # And UserError.
      aside = os.path.join(self.run_dir(run_id), 'result-unreadable.json')
      errors.warn(f'{path} is unreadable ({type(e).__name__}); moved to {aside}: the run '
                  f'counts as unfinished and resumes from its newest checkpoint.')
      files.move(path, aside)
      return None

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
      found = [self.read_result(run_id) for run_id in first + others]
      return results.to_csv([r for r in found if r is not None])

    try:
      files.write_settled(path, render)
    except OSError as e:  # A full disk, read-only filesystem or denied write: one line.
      fault = errors.write_fault(e, self.path, '--workdir')
      if not fault:
        raise
      raise UserError(f'{fault[:-1]}; the finished runs are kept, and a rerun writes '
                      f'{path}.') from e
    return path

  def prepare(self, config: ml_collections.ConfigDict, groups: tuple[str, ...] = ()) -> None:
    """Create the workdir and snapshot the config and the model's transferable
    groups (for the report); refuse a different config, and a directory that
    holds something else than a tfx_jax workdir."""
    snapshot = self.check(config)
    try:
      files.makedirs(self.path)
      probe = os.path.join(self.path, f'.write-test-{os.getpid()}')
      files.atomic_write(probe, 'ok')
      epath.Path(probe).unlink()
    except OSError as e:
      raise UserError(f'Cannot write to workdir {self.path!r} ({e.strerror}); '
                      f'choose a writable --workdir.') from None
    if self.is_main:
      files.atomic_write_json(os.path.join(self.path, 'config.json'), snapshot)
      if groups:
        files.atomic_write_json(os.path.join(self.path, results.GROUPS_FILE),
                                {'groups': list(groups)})

  def check(self, config: ml_collections.ConfigDict) -> dict:
    """`prepare`'s refusals, writing nothing; returns the config's snapshot."""
    self._refuse_foreign()
    snapshot = json.loads(config.to_json_best_effort())
    path = os.path.join(self.path, 'config.json')
    if files.exists(path):
      try:
        held = json.loads(files.read_text(path))
        if not isinstance(held, dict):
          raise ValueError('not a JSON object')
      except (OSError, ValueError) as e:
        raise UserError(f'{path} is unreadable ({type(e).__name__}: {str(e)[:80]}), so '
                        f'nothing can check which config its runs were trained with; '
                        f'restore it, or use a new --workdir.') from None
      differ = config_lib.differing_fields(held, snapshot)
      if differ:
        raise UserError(
            f'Workdir {self.path!r} holds runs of a different config (it differs '
            f'in {", ".join(differ)}). Use a new --workdir, or delete '
            f'{self.path!r} to start over.')
    return snapshot

  def _refuse_foreign(self) -> None:
    """A non-empty directory without config.json is not ours to write into:
    runs there could not be checked, and a results.csv there would be lost."""
    if files.exists(os.path.join(self.path, 'config.json')):
      return
    # Dot files are passed over: the write probe, and the temp file of a
    # config.json that process 0 of a multi-process job is writing just now.
    present = [n for n in files.listdir(self.path) if not n.startswith('.')]
    if 'runs' in present:
      raise UserError(f'Workdir {self.path!r} holds runs but no config.json, so nothing '
                      f'can check which config trained them; restore its config.json, or '
                      f'use a new --workdir.')
    if present:
      shown = ', '.join(present[:5]) + (f' and {len(present) - 5} more' if len(present) > 5
                                        else '')
      raise UserError(f'--workdir {self.path!r} is not empty and not a tfx_jax workdir (it '
                      f'holds {shown}); use a new or empty --workdir.')


def _agreed(flag: bool) -> bool:
  """Process 0's `flag`, on every process."""
  if jax.process_count() > 1:
    flag = bool(multihost_utils.broadcast_one_to_all(np.array(flag)))
  return flag
