"""Orbax checkpoints of one run: train state, data-iterator state and metrics.

A finished base run's final variables (params and any other collection, not
the optimizer state) are read back by every transplant that needs them; see
`load_variables`.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from tfx_jax import errors, files


class RunCheckpoints:
  """Save and resume one run: state, data iterator and metadata together."""

  def __init__(self, directory: str, *, keep: int = 2):
    self.directory = os.path.abspath(directory) if files.is_local(directory) else directory
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=True, create=True))

  def save(self, step: int, state: Any, data_state: Any, meta: dict, *,
           force: bool = False) -> None:
    self._manager.save(step, force=force, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)))

  def restore_latest(self, like_state: Any) -> tuple[Any, Any, dict] | None:
    """(state, data_state, meta) of the newest readable checkpoint, else None.

    An unreadable checkpoint (truncated, missing files) is moved aside as
    `corrupt-<step>` with a warning, and the previous one is tried. With
    several processes (which all read the same checkpoint), process 0 moves it
    and warns; the others wait for the move.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return restored.state, restored.data, restored.meta
      except Exception as e:  # pylint: disable=broad-except
        aside = os.path.join(self.directory, f'corrupt-{step}')
        if jax.process_index() == 0:
          errors.warn(f'Checkpoint {self.directory}/{step} is unreadable ({type(e).__name__}: '
                      f'{str(e).splitlines()[0][:200]}); moved to {aside}, trying the '
                      f'previous one.')
          files.move(os.path.join(self.directory, str(step)), aside)
        if jax.process_count() > 1:
          multihost_utils.sync_global_devices(f'moved aside {self.directory}/{step}')
        self._manager.reload()
    return None

  def steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the last save and closes; a save that failed (a full disk)
    raises once the manager is closed, so no write is left in flight at exit."""
    try:
      self._manager.wait_until_finished()
    except BaseException:
      with contextlib.suppress(Exception):
        self._manager.close()
      raise
    self._manager.close()


def finalised_steps(directory: str) -> list[int]:
  """The steps of the finalised checkpoints in `directory` ([] when none)."""
  if not files.exists(directory):
    return []
  if files.is_local(directory):
    directory = os.path.abspath(directory)
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False, read_only=True)) as manager:
    return list(manager.all_steps())


def has_step(directory: str, step: int) -> bool:
  """Whether `directory` holds a finalised checkpoint of `step`."""
  return step in finalised_steps(directory)


def final_step(directory: str) -> int | None:
  """The newest finalised checkpoint's step in `directory` (a finished run's
  final one), or None when it holds none."""
  return max(finalised_steps(directory), default=None)


def load_variables(directory: str, step: int, like: Any) -> dict:
  """The Flax variables of checkpoint `step` in `directory`, placed like `like`
  ({'params': ..., and any other collection of the model}).

  The step is explicit: on several processes, "the latest" could differ
  between them while the last save is being finalised.
  """
  item = {'params': like['params']}
  others = {k: v for k, v in like.items() if k != 'params'}
  if others:  # train.TrainState.tree(): the other collections in model_state.
    item['model_state'] = others
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, item)
  # A fresh manager: partial restore fails on the manager that saved.
  if files.is_local(directory):
    directory = os.path.abspath(directory)
  with ocp.CheckpointManager(directory) as manager:
    if step not in manager.all_steps():
      raise FileNotFoundError(f'No checkpoint of step {step} in {directory}.')
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=abstract, partial_restore=True,
            restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))))
  return {'params': restored.state['params'], **restored.state.get('model_state', {})}
