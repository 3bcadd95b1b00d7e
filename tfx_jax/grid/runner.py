"""Runs a config's whole grid: bases first, then every transplant, resumably.

Holds what runs share: the data halves, the compiled steps, the finished bases
(read once each), the order of the runs and this sweep shard's part of them.
The training loop of one run is `loop.train_and_evaluate`; the workdir's
layout is `workdir.Workdir`. A finished run (with its result.json) is skipped;
any other run resumes from its newest checkpoint. WORKDIR/results.csv is
rebuilt after every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import ml_collections

from tfx_jax import config as config_lib
from tfx_jax import errors, files, progress
from tfx_jax.data import input_pipeline, tasks
from tfx_jax.data.sources import local_copy
from tfx_jax.errors import UserError
from tfx_jax.grid import checks, experiments, local_shards, lock, pretrained
from tfx_jax.grid.results import Result
from tfx_jax.grid.workdir import Workdir
from tfx_jax.models import optim, registry, surgery
from tfx_jax.models import plan as plan_lib
from tfx_jax.training import checkpoints, eval_cache, feature_cache, loop, preemption, steps


class Grid:
  """One config's runs and what they share: data halves, compiled steps, bases."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               groups: tuple[str, ...]):
    self.groups = groups  # The model's transferable groups: n = 1..len(groups).
    self.config, self.workdir = config, Workdir(workdir)
    # A TFDS dataset's label index, when it cannot be cached next to the data:
    # in the workdir, which every host and every later VM finds (gs:// too).
    self.label_cache = os.path.join(workdir, 'labels')
    self.is_main = jax.process_index() == 0
    self.mesh = steps.make_mesh()
    self.image_shape = tasks.model_input(config).image_shape
    self.local_eval_batch = config.eval_batch_size // jax.process_count()
    self.specs = experiments.study(config, len(self.groups))
    self.tasks = {(split, target): self._local(task)  # -> its dataset and classes
                  for split in dict.fromkeys(s.split for s in self.specs)
                  for target, task in tasks.resolve(split, config).items()}
    # Bases trained elsewhere (--config.base_a, base_b): run id -> checkpoint.
    self.pretrained = {s.run_id: path for s in self.specs if s.treatment == 'base'
                       and (path := pretrained.path_of(config, s.target, s.seed))}
    self.progress = progress.Progress()
    self._optimizers, self._steps, self._evals, self._bases = {}, {}, {}, {}
    self._eval_data, self._norms, self._source_config = {}, {}, None
    self.preemption = preemption.Watch()

  def _local(self, task: tasks.Task) -> tasks.Task:
    """`task` read from a local copy of its data when config.data_cache_dir is set
    and the data is on gs:// (sources/local_copy.py); copied once per host."""
    local = local_copy.cached(task.data, task.data_dir, self.config.get('data_cache_dir'),
                              log=lambda line: print(line, flush=True))
    return task if local == task.data_dir else dataclasses.replace(task, data_dir=local)

  def chosen(self) -> list[int]:
    """The indices in self.specs of the runs this job's sweep covers: those
    config.sweep.runs names, or all."""
    chosen = set(experiments.selected(self.specs, self.config.sweep.runs))
    return [i for i, spec in enumerate(self.specs) if spec in chosen]

  def shards(self) -> dict[int, int]:
    """The sweep shard of each chosen run, by its index (`experiments.assign`)."""
    chosen = self.chosen()
    specs = [self.specs[i] for i in chosen]
    costs = [self.run_config(s).total_steps * self.run_config(s).batch_size for s in specs]
    return dict(zip(chosen, experiments.assign(specs, costs, self.config.sweep.num_shards)))

  def run_config(self, spec: experiments.RunSpec) -> ml_collections.ConfigDict:
    """The config `spec` trains with: the grid's, with `source_solver`'s fields
    for runs on the source dataset."""
    c = self.config
    if not spec.on_source:
      return c
    overrides = {k: v for k, v in c.source_solver.items() if v is not None}
    if overrides and self._source_config is None:
      self._source_config = ml_collections.ConfigDict(c.to_dict())
      self._source_config.update(overrides)
    return c if self._source_config is None else self._source_config

  def task(self, spec: experiments.RunSpec) -> tasks.Task:
    return self.tasks[spec.split, spec.target]

  def preprocess(self, task: tasks.Task):
    key = (task.data.mean, task.data.std)
    if key not in self._norms:
      self._norms[key] = steps.normalizer(*key)
    return self._norms[key]

  # Compiled functions, shared by every run with the same shapes and plan.
  def optimizer(self, params, plan: plan_lib.Plan, c: ml_collections.ConfigDict):
    key = (plan.solver_key(), *(c[k] for k in config_lib.SOLVER_FIELDS))
    if key not in self._optimizers:
      schedule = optim.make_schedule(c.schedule, c.lr, c.total_steps,
                                     step_size=c.lr_step, gamma=c.lr_gamma,
                                     warmup_steps=c.warmup_steps)
      self._optimizers[key] = optim.plan_optimizer(
          params, self.groups, plan, schedule, momentum=c.momentum,
          weight_decay=c.weight_decay, bias_lr_mult=c.bias_lr_mult)
    return self._optimizers[key]

  def _batch_shapes(self, b: int, with_mask: bool, cut=None):
    sharding = steps.batch_sharded(self.mesh)
    shapes = {'image': jax.ShapeDtypeStruct((b, *self.image_shape), jnp.uint8,
                                            sharding=sharding),
              'label': jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sharding)}
    if cut is not None:  # The feature cache's batches: no images.
      del shapes['image']
      shapes['features'] = jax.ShapeDtypeStruct((b, *cut[2]), jnp.float32, sharding=sharding)
    if with_mask:
      shapes['mask'] = jax.ShapeDtypeStruct((b,), jnp.bool_, sharding=sharding)
    return shapes

  def train_step(self, model, optimizer, state, frozen: tuple[str, ...], task: tasks.Task,
                 batch_size: int, cut=None):
    key = (model.num_classes, frozen, id(optimizer), id(self.preprocess(task)), batch_size,
           cut)
    if key not in self._steps:
      with self.progress.phase('compile'):
        step = steps.make_train_step(model, optimizer, frozen, self.mesh,
                                     self.preprocess(task), self.config.precision, cut)
        self._steps[key] = step.lower(
            state, self._batch_shapes(batch_size, False, cut)).compile()
    return self._steps[key]

  def eval_step(self, model, variables, task: tasks.Task, cut=None):
    key = (model.num_classes, id(self.preprocess(task)), cut)
    if key not in self._evals:
      with self.progress.phase('compile'):
        step = steps.make_eval_step(model, self.mesh, self.preprocess(task),
                                    self.config.precision, cut)
        self._evals[key] = step.lower(variables, self._batch_shapes(
            self.config.eval_batch_size, True, cut)).compile()
    return self._evals[key]

  def save_evaluation(self, index: int, spec: experiments.RunSpec, model, variables,
                      what: str, pretrained: str = '') -> Result:
    """The result of a run that trains nothing (a pretrained base, no_adapt):
    `variables` evaluated on its task (steps 0), logged as `what`, saved."""
    c, task = self.run_config(spec), self.task(spec)
    start = time.time()
    metrics = steps.evaluate(self.eval_step(model, variables, task), variables,
                             self.eval_data((spec.split, spec.target)),
                             self.local_eval_batch, self.mesh)
    result = Result.of_run(spec, [metrics], 0, time.time() - start, pretrained=pretrained,
                           precision=c.precision, frozen_norm=c.frozen_norm)
    self.log(f'[{index + 1}/{len(self.specs)} {spec.run_id}] {what}; eval top1 '
             f'{metrics["top1"]:.4f} top5 {metrics["top5"]:.4f} on {metrics["count"]}.')
    self.workdir.save_result(result)
    return result

  def eval_data(self, half: tuple[str, str]) -> eval_cache.EvalCache:
    """A task's eval batches: decoded at the grid's first evaluation on it, in
    memory for every later one (eval_cache.py)."""
    if half not in self._eval_data:
      c, task = self.config, self.tasks[half]
      self._eval_data[half] = eval_cache.EvalCache(input_pipeline.EvalData(
          task.data, task.classes, batch_size=self.local_eval_batch,
          data_dir=task.data_dir, max_examples=c.eval_examples or None,
          num_workers=c.num_workers, cache_dir=self.label_cache),
          self.local_eval_batch, self.mesh)
    return self._eval_data[half]

  def finished(self, spec: experiments.RunSpec) -> bool:
    """Trained (or evaluated) with its result.json; a pretrained base whose head
    does not fit its task, once its variables are in its run directory."""
    return self.workdir.finished(spec.run_id) or (
        spec.run_id in self.pretrained
        and self.workdir.has_checkpoint(spec.run_id, self.run_config(spec).total_steps))

  def wait_for(self, base: experiments.RunSpec, index: int) -> None:
    """Poll until another shard has finished `base`; a clear error on timeout,
    or at once when no shard of this job trains it (config.sweep.runs)."""
    sweep = self.config.sweep
    owner = self.shards().get(self.specs.index(base))
    if owner is None:
      raise UserError(
          f'Base {base.run_id} is not finished, and config.sweep.runs leaves it out; '
          f'train it first (python -m tfx_jax.slurm submits every base before its '
          f'transplants), then run this command again.')
    deadline = time.time() + sweep.wait_minutes * 60
    self.log(f'[{index + 1}/{len(self.specs)}] waiting for base {base.run_id} '
             f'(sweep shard {owner}) to finish...')
    while not self.base_ready(base):
      if time.time() > deadline:
        raise UserError(
            f'Waited {sweep.wait_minutes} minutes for base {base.run_id}, which '
            f'sweep shard {owner} trains; start that shard (or raise '
            f'--config.sweep.wait_minutes), then run this command again.')
      if self.preemption.reached():
        raise preemption.Preempted(base.run_id, 0, self.preemption.signum)
      time.sleep(sweep.poll_seconds)

  def base_ready(self, base: experiments.RunSpec) -> bool:
    """Whether `base` is finished and has its final checkpoint to transplant from."""
    return base.run_id in self._bases or (
        self.finished(base)
        and self.workdir.has_checkpoint(base.run_id, self.run_config(base).total_steps))

  def lost_bases(self) -> set[str]:
    """Finished bases without their final checkpoint (a workdir copied without
    checkpoints) that an unfinished run transplants from: they are trained
    again, as they were."""
    needed = {s.base for s in self.specs if s.base and not self.finished(s)}
    for base in needed:
      if self.base_ready(base):
        self._read_or_move_aside(base)
    return {b.run_id for b in needed if self.finished(b) and not self.base_ready(b)}

  def _read_or_move_aside(self, base: experiments.RunSpec) -> None:
    """Reads a finished base's final checkpoint now (its transplants need it
    anyway): an unreadable one is moved aside with a warning, so that the base
    counts as lost and is trained again."""
    try:
      self.base_variables(base)
    except Exception as e:  # pylint: disable=broad-except  # Orbax raises many kinds.
      directory = self.workdir.checkpoint_dir(base.run_id)
      step = self.run_config(base).total_steps
      aside = os.path.join(directory, f'corrupt-{step}')
      errors.warn(f'The final checkpoint of base {base.run_id} is unreadable '
                  f'({type(e).__name__}); moved to {aside}: the base is trained again.')
      if self.is_main:
        files.move(os.path.join(directory, str(step)), aside)

  def init_variables(self, spec: experiments.RunSpec, model):
    return registry.init_variables(model, jax.random.PRNGKey(spec.init_seed),
                                   self.image_shape)

  def base_variables(self, base: experiments.RunSpec):
    """A finished base's final variables (params and any other collection),
    read once and shared by all transplants."""
    if base.run_id not in self._bases:
      if not self.finished(base):
        raise RuntimeError(f'Base {base.run_id} is not finished.')
      model = registry.create(self.config.model, len(self.task(base).classes),
                              self.config.axis_name)
      rep = steps.replicated(self.mesh)
      like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep),
                          jax.eval_shape(lambda: self.init_variables(base, model)))
      with self.progress.phase('io'):
        self._bases[base.run_id] = checkpoints.load_variables(
            self.workdir.checkpoint_dir(base.run_id), self.run_config(base).total_steps,
            like)
    return self._bases[base.run_id]

  def log(self, message: str) -> None:
    if self.is_main:
      print(message, flush=True)

  def run_one(self, index: int, spec: experiments.RunSpec) -> Result | None:
    """Train and evaluate one run, resuming from its newest checkpoint."""
    if spec.run_id in self.pretrained:
      return pretrained.import_base(self, index, spec)
    c, task = self.run_config(spec), self.task(spec)
    model = registry.create(c.model, len(task.classes), c.axis_name, c.frozen_norm)
    if spec.treatment == 'no_adapt':  # The shift experiment's source base, head and all.
      return self.save_evaluation(index, spec, model, self.base_variables(spec.base),
                                  'the source base, not adapted')
    plan = spec.plan(len(self.groups), c.tune, c.total_steps)
    variables = self.init_variables(spec, model)
    head = plan_lib.outside(variables['params'], self.groups)
    copied = plan.copied(self.groups, head)
    if copied:  # Every collection: BatchNorm statistics too.
      variables = surgery.transplant_variables(
          variables, self.base_variables(spec.base), copied)
    params = variables.pop('params')
    optimizer = self.optimizer(params, plan, c)
    state = steps.create_state(params, optimizer, spec.init_seed, self.mesh,
                               model_state=variables)
    eval_data = self.eval_data((spec.split, spec.target))
    data = input_pipeline.train_iterator(
        task.data, task.classes, batch_size=c.batch_size // jax.process_count(),
        seed=spec.init_seed, data_dir=task.data_dir, augment=c.augment,
        num_workers=c.num_workers, cache_dir=self.label_cache,
        examples_per_class=spec.examples_per_class, subset_seed=spec.seed)
    data, cut = feature_cache.setup(
        model, plan.prefix(self.groups) if not plan.probe_steps else (), state.variables,
        data, self.preprocess(task), self.mesh, batch_size=c.batch_size // jax.process_count(),
        budget_mb=c.feature_cache_mb, eval_examples=eval_data.num_examples,
        augment=task.data.augment if c.augment is None else c.augment, log=self.log)
    step_fn = self.train_step(model, optimizer, state, plan.frozen(self.groups, head), task,
                              c.batch_size, cut)
    if plan.probe_steps:
      probe_fn = self.train_step(model, optimizer, state, plan.probe_frozen(self.groups),
                                 task, c.batch_size)
      step_fn = steps.Phases((0, plan.probe_steps), (probe_fn, step_fn))
    eval_fn = self.eval_step(model, state.variables, task, cut)
    def evaluate(variables) -> dict:  # The frozen prefix's outputs too when cached.
      return steps.evaluate(eval_fn, variables, data.eval_batches(eval_data) if cut
                            else eval_data, self.local_eval_batch, self.mesh)
    try:
      state, history = loop.train_and_evaluate(
          c, spec.run_id, self.workdir.run_dir(spec.run_id), state, step_fn, evaluate,
          data, mesh=self.mesh, watch=self.preemption, progress=self.progress,
          log=self.log, label=f'[{index + 1}/{len(self.specs)} {spec.run_id}]')
    finally:
      data.close()  # Stops its worker processes now, not at garbage collection.
    wise = ()
    if spec.wise and copied:  # WiSE-FT: the trained copied groups toward the base's values.
      with self.progress.phase('eval'):
        wise = plan_lib.wise_curve(state.variables, self.base_variables(spec.base),
                                   plan.moved(self.groups, head), experiments.wise_alphas(c),
                                   evaluate)
      self.log('  WiSE top1 by alpha: ' + ', '.join(f'{a:g}: {t:.4f}' for a, t in wise))
    result = Result.of_run(spec, history, c.total_steps, self.progress.run_wall_s,
                           precision=c.precision, wise=wise, frozen_norm=c.frozen_norm)
    self.workdir.save_result(result)
    return result

  def write_results(self) -> str:
    return self.workdir.write_results([spec.run_id for spec in self.specs])


def _source_solver_note(grid: Grid) -> str:
  source = next((grid.run_config(s) for s in grid.specs
                 if grid.run_config(s) is not grid.config), None)
  return (f' (runs on the source: batch {source.batch_size}, {source.total_steps} steps)'
          if source else '')


def run(config: ml_collections.ConfigDict, workdir: str) -> bool:
  """Run (or resume) this sweep shard's runs of `config` in `workdir`.

  Returns whether the whole grid is finished (every shard's runs).
  """
  groups = checks.prepare(config, workdir)
  with (lock.held(workdir, config.sweep.shard, config.sweep.num_shards, config.sweep.runs)
        if jax.process_index() == 0 else contextlib.nullcontext()):
    return _run(Grid(config, workdir, groups))


def _run(grid: Grid) -> bool:
  config, workdir = grid.config, grid.workdir.path
  shards, shard = config.sweep.num_shards, config.sweep.shard
  chosen = grid.chosen()
  mine = [i for i, k in grid.shards().items() if k == shard]
  lost = grid.lost_bases()
  todo = [i for i in mine
          if not grid.finished(grid.specs[i]) or grid.specs[i].run_id in lost]
  grid.progress.start_grid(sum(grid.run_config(grid.specs[i]).total_steps for i in todo))
  part = f' (sweep shard {shard} of {shards}: {len(mine)} runs)' if shards > 1 else ''
  if len(chosen) < len(grid.specs):
    part = f' (config.sweep.runs: {len(chosen)} runs' + (
        f'; sweep shard {shard} of {shards}: {len(mine)})' if shards > 1 else ')')
  again = sum(grid.specs[i].run_id in lost for i in mine)  # finished, yet in todo
  done = len(mine) - len(todo) + again
  grid.log(f'{len(grid.specs)} runs in {workdir}{part}{local_shards.pinning()}, '
           f'{done} finished'
           + (f' ({again} to train again: checkpoint missing)' if again else '')
           + f'; {jax.device_count()} devices, global batch '
           f'{config.batch_size}, {config.total_steps} steps each'
           + _source_solver_note(grid) + '.')
  try:
    for index in todo:
      spec = grid.specs[index]
      if spec.run_id in lost:
        grid.log(f'[{index + 1}/{len(grid.specs)} {spec.run_id}] finished, but its '
                 f'final checkpoint is missing and unfinished runs transplant from '
                 f'it: training it again.')
      if spec.base and not grid.base_ready(spec.base):
        grid.wait_for(spec.base, index)
      grid.run_one(index, spec)
      grid.write_results()
  finally:
    grid.preemption.close()
  path = grid.write_results()
  left = sum(not grid.finished(s) for s in grid.specs)
  grid.log(f'Done{part}: results in {path}'
           + (f' ({left} runs of other {"tasks" if len(chosen) < len(grid.specs) else "shards"} '
              f'still unfinished)' if left else '')
           + f'. Wall time {grid.progress.summary()}.')
  return not left
