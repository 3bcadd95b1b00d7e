"""The training loop of one run: train to the last step, evaluating, logging
and checkpointing on the way, resuming from the run's newest checkpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Callable

import jax
import ml_collections
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from tfx_jax.progress import Progress
from tfx_jax.training import checkpoints, metrics, preemption, prefetch
from tfx_jax.training.steps import Phases, TrainState, global_batch


def train_and_evaluate(config: ml_collections.ConfigDict, run_id: str, run_dir: str,
                       state: TrainState, train_step: Callable,
                       evaluate: Callable[[Any], dict], data: Iterator, *, mesh: Mesh,
                       watch: preemption.Watch, progress: Progress,
                       log: Callable[[str], None] = print,
                       label: str = '') -> tuple[TrainState, list[dict]]:
  """Train one run to config.total_steps, resuming from its newest checkpoint.

  `data` yields this process's batches and has get_state/set_state;
  `train_step` is one compiled step or steps.Phases (one by step range);
  `evaluate(variables)` gives count, top1, top5 and loss. Every eval_every steps
  the run is evaluated and logged, every checkpoint_every steps (and at the end)
  the state, the data iterator, the evaluations so far and the progress are
  saved together in RUN_DIR/checkpoints. A thread puts the next
  config.device_prefetch batches on the devices while a step runs. On a
  preemption notice the current step is saved and preemption.Preempted
  raised. Returns the final state and the evaluations ({'step', 'top1', 'top5', 'loss'} each).
  """
  c, is_main = config, jax.process_index() == 0
  data = prefetch.DevicePrefetch(data, lambda batch: global_batch(batch, mesh),
                                 c.get('device_prefetch', 2))
  ckpts = checkpoints.RunCheckpoints(os.path.join(run_dir, 'checkpoints'),
                                     keep=c.keep_checkpoints)
  with progress.phase('io'):
    restored = ckpts.restore_latest(state.tree())
  history, saved = [], None
  if restored:
    tree, data_state, saved = restored
    state = TrainState(**tree)
    data.set_state(data_state)
    history = saved['history']
    log(f'  resuming {run_id} from step {int(state.step)}')
  step = int(state.step)
  progress.start_run(step, saved)
  writer = metrics.MetricsWriter(run_dir, step) if is_main else None

  def save(force: bool = False) -> None:
    with progress.phase('io'):
      if writer:  # The logs are never behind a checkpoint.
        writer.flush()
      ckpts.save(step, state.tree(), data.get_state(), {'history': history, **progress.state()},
                 force=force)

  try:
    pending, segment_steps, segment_start = [], 0, progress.totals['train']
    while step < c.total_steps:
      # Checked between steps, where every eval and save of `step` is done.
      if watch.reached():
        if step not in ckpts.steps():
          save(force=True)
        raise preemption.Preempted(run_id, step, watch.signum)
      with progress.phase('train'):
        try:
          batch = next(data)
        except Exception:
          if not watch.received():
            raise
          # The signal also reached a data worker before it could ignore it
          # (while starting): stop as the signal asks, the step still saved.
          if step not in ckpts.steps():
            save(force=True)
          raise preemption.Preempted(run_id, step, watch.signum) from None
        run_step = train_step.at(step) if isinstance(train_step, Phases) else train_step
        state, step_metrics = run_step(state, batch)
        pending.append(step_metrics)
      step += 1
      segment_steps += 1
      progress.stepped()
      watch.stepped()
      is_eval = step % c.eval_every == 0 or step == c.total_steps
      if not (is_eval or step % c.log_every == 0):
        continue
      with progress.phase('train'):
        fetched = jax.device_get(pending)
        metrics.check_finite(fetched, run_id, step - len(pending) + 1)
        pending = []
        if writer:
          writer.write(step, 'train', {k: float(v) for k, v in fetched[-1].items()})
      if not is_eval:
        continue
      with progress.phase('eval'):
        ev = evaluate(state.variables)
      history.append({'step': step, **{k: ev[k] for k in ('top1', 'top5', 'loss')}})
      if writer:
        writer.write(step, 'eval', ev)
      rate = segment_steps / max(progress.totals['train'] - segment_start, 1e-9)
      log(f'{label} step {step}/{c.total_steps} loss {fetched[-1]["loss"]:.4f}'
          f' | eval top1 {ev["top1"]:.4f} top5 {ev["top5"]:.4f} on {ev["count"]}'
          f' | {rate:.1f} steps/s, run ETA {progress.eta(c.total_steps - step)},'
          f' grid ETA {progress.grid_eta()}')
      if step % c.checkpoint_every == 0 or step == c.total_steps:
        save()
      segment_steps, segment_start = 0, progress.totals['train']
  finally:
    data.stop()
    with progress.phase('io'):
      ckpts.close()
      if writer:
        writer.close()
  if jax.process_count() > 1:  # Every process sees the final checkpoint.
    multihost_utils.sync_global_devices(f'finished {run_id}')
  return state, history
