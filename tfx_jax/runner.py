"""Runs a config's whole grid: bases first, then every transplant, resumably.

Each run lives in WORKDIR/runs/<run_id>/ (checkpoints/, metrics.jsonl, tb/,
result.json). A run with a result.json is finished and skipped; any other run
resumes from its newest checkpoint. WORKDIR/results.csv is rebuilt from the
result.json files after every run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
from collections import defaultdict

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from tfx_jax import (checkpoints, experiments, files, input_pipeline, models,
                     optim, preemption, splits, surgery, tensorboard, train)
from tfx_jax.config import RESULT_FIELDS
from tfx_jax.errors import UserError


class DivergedError(UserError):
  """The loss became NaN or infinite."""


def best10(values) -> float:
  """The paper's metric: mean of the 10 highest validation top-1 values."""
  return float(np.mean(sorted(values, reverse=True)[:10]))


def _fmt_time(seconds: float) -> str:
  seconds = int(round(seconds))
  h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class Timers:
  """Wall time of the grid by phase: compile, train, eval, io."""

  def __init__(self):
    self.seconds = defaultdict(float)

  @contextlib.contextmanager
  def __call__(self, phase: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[phase] += time.perf_counter() - start

  def summary(self) -> str:
    total = sum(self.seconds.values())
    parts = ', '.join(f'{k} {_fmt_time(v)}' for k, v in sorted(self.seconds.items()))
    return f'{_fmt_time(total)} ({parts})'


class Grid:
  """One config's runs and what they share: data halves, compiled steps, bases."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.is_main = jax.process_index() == 0
    self.mesh = train.make_mesh()
    self.data = input_pipeline.dataset_spec(config.dataset)
    if config.model not in models.PRESETS:
      raise UserError(f'Unknown model {config.model!r}; known: '
                      f'{", ".join(sorted(models.PRESETS))}.')
    if config.split == experiments.ALL:
      self.halves = {experiments.ALL: tuple(range(self.data.num_classes))}
    else:
      a, b = splits.resolve(config.split, config.dataset, self.data.num_classes)
      self.halves = {'A': tuple(a), 'B': tuple(b)}
    train.check_batch_size(config.batch_size, self.mesh)
    if config.batch_size % jax.process_count():
      raise UserError(f'batch_size {config.batch_size} is not divisible by the '
                      f'{jax.process_count()} processes.')
    train.check_batch_size(config.eval_batch_size, self.mesh)
    if not 0 <= config.sweep.shard < config.sweep.num_shards:
      raise UserError(f'sweep.shard must be in 0..{config.sweep.num_shards - 1} '
                      f'(sweep.num_shards - 1), got {config.sweep.shard}.')
    self.local_batch = config.batch_size // jax.process_count()
    self.local_eval_batch = config.eval_batch_size // jax.process_count()
    self.specs = experiments.grid(config.experiment, config.split, config.seeds,
                                  config.layers, config.only, config.targets)
    self.timers = Timers()
    self._optimizers, self._steps, self._evals, self._bases = {}, {}, {}, {}
    self._step_seconds, self._steps_done = 0.0, 0
    self.preemption = preemption.Watch()
    self.steps_taken = 0  # Over the whole grid: the preemption sync counter.
    self._finished = set()  # Run ids seen finished: a result.json stays.

  # Compiled functions, shared by every run with the same shapes and cut.
  def optimizer(self, params, frozen_n: int):
    if frozen_n not in self._optimizers:
      c = self.config
      schedule = optim.make_schedule(c.schedule, c.lr, c.total_steps,
                                     step_size=c.lr_step, gamma=c.lr_gamma,
                                     warmup_steps=c.warmup_steps)
      labels = surgery.freeze_labels(params, surgery.first_layers(frozen_n))
      self._optimizers[frozen_n] = optim.make_optimizer(
          labels, schedule, momentum=c.momentum, weight_decay=c.weight_decay,
          bias_lr_mult=c.bias_lr_mult)
    return self._optimizers[frozen_n]

  def _batch_shapes(self, with_mask: bool):
    sharding = train.batch_sharded(self.mesh)
    b = self.config.eval_batch_size if with_mask else self.config.batch_size
    shapes = {'image': jax.ShapeDtypeStruct((b, *self.data.image_shape), jnp.float32,
                                            sharding=sharding),
              'label': jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sharding)}
    if with_mask:
      shapes['mask'] = jax.ShapeDtypeStruct((b,), jnp.bool_, sharding=sharding)
    return shapes

  def train_step(self, model, optimizer, state, frozen_n: int):
    key = (model.num_classes, frozen_n)
    if key not in self._steps:
      with self.timers('compile'):
        step = train.make_train_step(model, optimizer, surgery.first_layers(frozen_n),
                                     self.mesh)
        self._steps[key] = step.lower(state, self._batch_shapes(False)).compile()
    return self._steps[key]

  def eval_step(self, model, params):
    if model.num_classes not in self._evals:
      with self.timers('compile'):
        step = train.make_eval_step(model, self.mesh)
        self._evals[model.num_classes] = step.lower(
            params, self._batch_shapes(True)).compile()
    return self._evals[model.num_classes]

  def run_dir(self, spec: experiments.RunSpec) -> str:
    return os.path.join(self.workdir, 'runs', spec.run_id)

  def finished(self, spec: experiments.RunSpec, *, cached: bool = False) -> bool:
    """Whether the run has its result.json; process 0 decides for all.

    A yes is remembered; `cached=True` answers from memory alone (for the ETA,
    asked at every evaluation: no storage request, no collective).
    """
    if spec.run_id in self._finished or cached:
      return spec.run_id in self._finished
    done = files.exists(os.path.join(self.run_dir(spec), 'result.json'))
    if jax.process_count() > 1:
      done = bool(multihost_utils.broadcast_one_to_all(np.array(done)))
    if done:
      self._finished.add(spec.run_id)
    return done

  def wait_for(self, base: experiments.RunSpec, index: int) -> None:
    """Poll until another shard has finished `base`; a clear error on timeout."""
    sweep = self.config.sweep
    owner = self.specs.index(base) % sweep.num_shards
    deadline = time.time() + sweep.wait_minutes * 60
    self.log(f'[{index + 1}/{len(self.specs)}] waiting for base {base.run_id} '
             f'(sweep shard {owner}) to finish...')
    while not self.finished(base):
      if time.time() > deadline:
        raise UserError(
            f'Waited {sweep.wait_minutes} minutes for base {base.run_id}, which '
            f'sweep shard {owner} trains; start that shard (or raise '
            f'--config.sweep.wait_minutes), then run this command again.')
      if self.preemption.reached(self.steps_taken):
        raise preemption.Preempted(base.run_id, 0)
      time.sleep(sweep.poll_seconds)

  def init_params(self, spec: experiments.RunSpec, model):
    return models.init_params(model, jax.random.PRNGKey(spec.init_seed),
                              self.data.image_shape)

  def base_params(self, base: experiments.RunSpec):
    """A finished base's final params, read once and shared by all transplants."""
    if base.run_id not in self._bases:
      if not self.finished(base):
        raise RuntimeError(f'Base {base.run_id} is not finished.')
      model = models.create(self.config.model, len(self.halves[base.target]))
      rep = train.replicated(self.mesh)
      like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                          jax.eval_shape(lambda: self.init_params(base, model)))
      with self.timers('io'):
        self._bases[base.run_id] = checkpoints.load_params(
            os.path.join(self.run_dir(base), 'checkpoints'), self.config.total_steps,
            like)
    return self._bases[base.run_id]

  def eta(self, remaining_steps: int) -> str:
    if not self._steps_done:
      return '?'
    return _fmt_time(remaining_steps * self._step_seconds / self._steps_done)

  def remaining_steps(self, after: int) -> int:
    return sum(self.config.total_steps for s in self.specs[after + 1:]
               if not self.finished(s, cached=True))

  def log(self, message: str) -> None:
    if self.is_main:
      print(message, flush=True)

  def run_one(self, index: int, spec: experiments.RunSpec) -> dict:
    """Train and evaluate one run, resuming from its newest checkpoint."""
    c, run_dir = self.config, self.run_dir(spec)
    classes = self.halves[spec.target]
    model = models.create(c.model, len(classes))
    params = self.init_params(spec, model)
    if spec.copies_base:
      params = surgery.transplant(params, self.base_params(spec.base),
                                  surgery.first_layers(spec.n))
    optimizer = self.optimizer(params, spec.frozen_n)
    state = train.create_state(params, optimizer, spec.init_seed, self.mesh)
    step_fn = self.train_step(model, optimizer, state, spec.frozen_n)
    eval_fn = self.eval_step(model, state.params)
    data = input_pipeline.train_iterator(
        c.dataset, classes, batch_size=self.local_batch, seed=spec.init_seed,
        data_dir=c.data_dir, augment=c.augment, num_workers=c.num_workers)
    ckpts = checkpoints.RunCheckpoints(os.path.join(run_dir, 'checkpoints'),
                                       keep=c.keep_checkpoints)
    history, wall = [], 0.0
    with self.timers('io'):
      restored = ckpts.restore_latest(state)
    if restored:
      state, data_state, meta = restored
      data.set_state(data_state)
      history, wall = meta['history'], meta['wall_s']
      self.log(f'  resuming {spec.run_id} from step {int(state.step)}')
    writer = MetricsWriter(run_dir, int(state.step)) if self.is_main else None
    counter = f'[{index + 1}/{len(self.specs)} {spec.run_id}]'

    try:
      pending, seg_start, seg_steps = [], time.perf_counter(), 0
      step = int(state.step)
      while step < c.total_steps:
        # Checked between steps, where every eval and save of `step` is done.
        if self.preemption.reached(self.steps_taken):
          with self.timers('io'):
            wall += time.perf_counter() - seg_start
            if step not in ckpts.steps():
              if writer:
                writer.flush()  # Before the save: a checkpoint never outruns its logs.
              ckpts.save(step, state, data.get_state(),
                         {'history': history, 'wall_s': wall}, force=True)
          raise preemption.Preempted(spec.run_id, step)
        with self.timers('train'):
          state, metrics = step_fn(state, train.global_batch(next(data), self.mesh))
          pending.append(metrics)
          step += 1
          seg_steps += 1
          self.steps_taken += 1
        is_eval = step % c.eval_every == 0 or step == c.total_steps
        if not (is_eval or step % c.log_every == 0):
          continue
        with self.timers('train'):
          fetched = jax.device_get(pending)
        _check_finite(fetched, spec.run_id, step - len(pending) + 1)
        pending = []
        if writer:
          writer.write(step, 'train', {k: float(v) for k, v in fetched[-1].items()})
        if not is_eval:
          continue
        seconds = time.perf_counter() - seg_start
        self._step_seconds += seconds
        self._steps_done += seg_steps
        wall += seconds
        with self.timers('eval'):
          t0 = time.perf_counter()
          ev = train.evaluate(eval_fn, state.params, input_pipeline.eval_batches(
              c.dataset, classes, batch_size=self.local_eval_batch, data_dir=c.data_dir,
              max_examples=c.eval_examples or None), self.local_eval_batch, self.mesh)
          wall += time.perf_counter() - t0
        history.append({'step': step, **{k: ev[k] for k in ('top1', 'top5', 'loss')}})
        if writer:
          writer.write(step, 'eval', ev)
        left = c.total_steps - step
        self.log(f'{counter} step {step}/{c.total_steps} loss {fetched[-1]["loss"]:.4f}'
                 f' | eval top1 {ev["top1"]:.4f} top5 {ev["top5"]:.4f} on {ev["count"]}'
                 f' | {seg_steps / seconds:.1f} steps/s, run ETA {self.eta(left)},'
                 f' grid ETA {self.eta(left + self.remaining_steps(index))}')
        if step % c.checkpoint_every == 0 or step == c.total_steps:
          with self.timers('io'):
            if writer:
              writer.flush()
            ckpts.save(step, state, data.get_state(), {'history': history, 'wall_s': wall})
        seg_start, seg_steps = time.perf_counter(), 0
    finally:
      with self.timers('io'):
        ckpts.close()
        if writer:
          writer.close()
    if jax.process_count() > 1:  # Every process sees the final checkpoint.
      multihost_utils.sync_global_devices(f'finished {spec.run_id}')
    last = history[-1]
    result = {'run_id': spec.run_id, 'split': spec.split, 'treatment': spec.treatment,
              'source': spec.source, 'target': spec.target, 'n': spec.n,
              'seed': spec.seed, 'top1': last['top1'], 'top5': last['top5'],
              'best10_top1': best10([h['top1'] for h in history]),
              'steps': c.total_steps, 'wall_s': round(wall, 3)}
    if self.is_main:
      files.atomic_write_json(os.path.join(run_dir, 'result.json'), result)
    return result

  def write_results(self) -> str:
    """WORKDIR/results.csv: a row per finished run of the workdir.

    This grid's runs in grid order, then those of other experiments or
    splits run into the same workdir, by run id. Rebuilt from the runs'
    result.json files until a rebuild after the write matches it, so sweep
    shards sharing the workdir, on disk or gs://, never drop each other's rows
    (no lock: see files.write_settled).
    """
    path = os.path.join(self.workdir, 'results.csv')
    if not self.is_main:
      return path

    def render() -> str:
      out = io.StringIO()
      writer = csv.writer(out, lineterminator='\n')
      writer.writerow(experiments.RESULT_COLUMNS)
      mine = [self.run_dir(spec) for spec in self.specs]
      runs = os.path.join(self.workdir, 'runs')
      others = [os.path.join(runs, name) for name in files.listdir(runs)
                if os.path.join(runs, name) not in mine]
      for run_dir in mine + others:
        result_file = os.path.join(run_dir, 'result.json')
        if files.exists(result_file):
          result = json.loads(files.read_text(result_file))
          writer.writerow([_csv_value(result[k]) for k in experiments.RESULT_COLUMNS])
      return out.getvalue()

    files.write_settled(path, render)
    return path


def _csv_value(value):
  return repr(value) if isinstance(value, float) else value


def _check_finite(fetched: list[dict], run_id: str, first_step: int) -> None:
  for i, metrics in enumerate(fetched):
    for name, value in sorted(metrics.items()):
      if not math.isfinite(float(value)):
        raise DivergedError(
            f'Run {run_id}: {name} is {float(value)} at step {first_step + i}. '
            f'Lower the learning rate (--config.lr) with a new --workdir, or '
            f'check the data.')


class MetricsWriter:
  """Per-run metrics as JSON lines and TensorBoard events: `files.Log`s, so on
  gs:// they are written at `flush` (before each checkpoint) and `close`."""

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


def prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Create the workdir and snapshot the config; refuse a different config."""
  try:
    files.makedirs(workdir)
    probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
    files.atomic_write(probe, 'ok')
    epath.Path(probe).unlink()
  except OSError as e:
    raise UserError(f'Cannot write to workdir {workdir!r} ({e.strerror}); choose a '
                    f'writable --workdir.') from None
  snapshot = json.loads(config.to_json_best_effort())
  path = os.path.join(workdir, 'config.json')
  if files.exists(path):
    old = json.loads(files.read_text(path))
    differ = [k for k in RESULT_FIELDS if old.get(k) != snapshot.get(k)]
    if differ:
      raise UserError(
          f'Workdir {workdir!r} holds runs of a different config (it differs in '
          f'{", ".join(differ)}). Use a new --workdir, or delete {workdir!r} to '
          f'start over.')
  if jax.process_index() == 0:
    files.atomic_write_json(path, snapshot)


def run(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Run (or resume) this sweep shard's runs of `config` in `workdir`.

  Returns whether the whole grid is finished (every shard's runs).
  """
  start = time.perf_counter()
  grid = Grid(config, workdir)
  input_pipeline.check_prepared(config.dataset, config.data_dir)
  prepare_workdir(config, workdir)
  shards, shard = config.sweep.num_shards, config.sweep.shard
  mine = [i for i in range(len(grid.specs)) if i % shards == shard]
  todo = [i for i in mine if not grid.finished(grid.specs[i])]
  part = f' (sweep shard {shard} of {shards}: {len(mine)} runs)' if shards > 1 else ''
  grid.log(f'{len(grid.specs)} runs in {workdir}{part}, {len(mine) - len(todo)} '
           f'finished; {jax.device_count()} devices, global batch '
           f'{config.batch_size}, {config.total_steps} steps each.')
  try:
    for index in todo:
      spec = grid.specs[index]
      if spec.base and not grid.finished(spec.base):
        grid.wait_for(spec.base, index)
      grid.run_one(index, spec)
      grid.write_results()
  finally:
    grid.preemption.close()
  path = grid.write_results()
  left = sum(not grid.finished(s) for s in grid.specs)
  grid.log(f'Done{part}: results in {path}'
           + (f' ({left} runs of other shards still unfinished)' if left else '')
           + f'. Wall time {_fmt_time(time.perf_counter() - start)}; this process: '
           f'{grid.timers.summary()}.')
  return not left
