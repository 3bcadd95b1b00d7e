"""Bases that were trained elsewhere: `--config.base_a=PATH` (and `base_b`).

PATH is an Orbax checkpoint of Flax variables (a tfx_jax run directory, a
CheckpointManager's directory, one step of it, or one checkpoint), a
`flax.serialization` msgpack file, or an `.npz` whose keys are '/'-joined
paths (`params/conv1/kernel`); of the variables dict, or of params alone.
`{seed}` in PATH is the run's seed. The grid then trains no such base: it
checks the tree against the model, records PATH and a hash of its variables in
WORKDIR/pretrained.json (`results.PRETRAINED_FILE`: a workdir refuses a
changed checkpoint), and puts the variables into the base's run directory,
from where every transplant reads them as it reads a trained base's.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from etils import epath
from flax import serialization, traverse_util

from tfx_jax import errors, files
from tfx_jax.data import tasks
from tfx_jax.errors import UserError
from tfx_jax.grid import experiments, results
from tfx_jax.models import registry
from tfx_jax.training import checkpoints, steps

_STATE_KEYS = {'step', 'params', 'opt_state', 'rng'}  # A tfx_jax TrainState's tree.
_SHOWN = 8  # Paths listed per kind of mismatch.


def field(target: str) -> str:
  """The config field of the base on target 'A' or 'B'."""
  return f'base_{target.lower()}'


def path_of(config, target: str, seed: int) -> str:
  """The checkpoint the base on `target` of `seed` comes from; '' if trained here."""
  value = config.get(field(target)) or ''
  return value.replace('{seed}', str(seed))


def _orbax_item(path: str) -> str | None:
  """The directory of the one Orbax item PATH names, or None if it is no
  Orbax checkpoint: a run directory's newest step, a manager's newest step,
  a step's `state` (tfx_jax) or `default` item, or a checkpoint itself."""
  p = epath.Path(path)
  if not p.is_dir():
    return None
  if (p / 'checkpoints').is_dir():
    p = p / 'checkpoints'
  step_dirs = [c for c in p.iterdir() if c.name.isdigit() and c.is_dir()]
  if step_dirs:
    p = max(step_dirs, key=lambda c: int(c.name))
  for item in ('state', 'default'):
    if (p / item / '_METADATA').exists():
      return str(p / item)
  return str(p) if (p / '_METADATA').exists() else None


def fingerprint(variables: Mapping) -> str:
  """sha256 of the variables `load` returned (paths, dtypes, shapes, bytes): the
  checkpoint is read once, for the fit and for its record."""
  digest = hashlib.sha256()
  for path, leaf in sorted(traverse_util.flatten_dict(variables, sep='/').items()):
    array = np.ascontiguousarray(leaf)
    digest.update(f'{path} {array.dtype.str} {array.shape}\0'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


class Loaded(dict):
  """The variables `load` read, which remembers how the file names them:
  `in_file` gives a variables path ('params/a/b') as the file's key, so that
  messages name what the user can find in it."""

  def __init__(self, variables: Mapping, layout: str = 'variables'):
    super().__init__(variables)
    self.layout = layout  # 'variables', 'params' (params alone) or 'state' (tfx_jax's).

  def in_file(self, path: str) -> str:
    collection, _, rest = path.partition('/')
    if self.layout == 'params' and collection == 'params':
      return rest
    if self.layout == 'state' and collection != 'params':
      return f'model_state/{path}'
    return path


def load(path: str, what: str) -> Loaded:
  """The Flax variables at `path` as nested dicts of numpy arrays: a params
  tree alone becomes {'params': tree}; a tfx_jax train state its params and
  model_state. `what` names the field in errors."""
  files.check_path(path, what)
  if not files.exists(path):
    raise UserError(f'{what} {path!r} does not exist; give a checkpoint directory, '
                    f'a msgpack file or an .npz (docs/own_model.md).')
  item = _orbax_item(path)
  try:
    if item is not None:
      import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
      tree = ocp.PyTreeCheckpointer().restore(item)
    elif path.endswith('.npz'):
      with np.load(io.BytesIO(epath.Path(path).read_bytes())) as npz:
        tree = traverse_util.unflatten_dict({k: npz[k] for k in npz.files}, sep='/')
    else:
      tree = serialization.msgpack_restore(epath.Path(path).read_bytes())
  except Exception as e:  # pylint: disable=broad-except  # Each format fails its own way.
    raise UserError(f'{what} {path!r} is not a readable Orbax checkpoint, flax msgpack '
                    f'file or .npz ({type(e).__name__}: {" ".join(str(e).split())[:200]}).'
                    ) from None
  if not isinstance(tree, Mapping) or not tree:
    raise UserError(f'{what} {path!r} holds no tree of arrays.')
  tree = jax.tree.map(np.asarray, _plain(tree))
  if _STATE_KEYS <= set(tree):  # A tfx_jax run's state: its variables only.
    return Loaded({'params': tree['params'], **tree.get('model_state', {})}, 'state')
  return Loaded(tree) if 'params' in tree else Loaded({'params': tree}, 'params')


def _plain(tree):
  if isinstance(tree, Mapping):
    return {str(k): _plain(v) for k, v in tree.items()}
  return tree


def fit(fresh: Mapping, loaded: Mapping, groups: tuple[str, ...], what: str,
        model: str) -> tuple[dict, bool]:
  """`fresh` (the model's own init) with every leaf of its transferable groups,
  and of its head where shapes agree, from `loaded`. Returns the variables and
  whether the whole tree fit (the head too), so the base can be evaluated.

  A UserError lists every missing, extra and mis-shaped path when the groups
  do not fit, as the file names it (`Loaded.in_file`: an .npz of params alone
  has no 'params/'); a collection the checkpoint lacks (params alone, without
  BatchNorm's statistics) keeps its fresh values."""
  named = loaded.in_file if isinstance(loaded, Loaded) else lambda p: p
  flat_fresh = traverse_util.flatten_dict(_plain(fresh), sep='/')
  flat_loaded = traverse_util.flatten_dict(_plain(loaded), sep='/')
  collections = {p.split('/', 1)[0] for p in flat_loaded}
  paths = [p.split('/') for g in groups for p in g.split('+')]

  def grouped(path: str) -> bool:
    parts = path.split('/')[1:]
    return any(parts[:len(g)] == g for g in paths)

  missing = [named(p) for p in flat_fresh
             if grouped(p) and p.split('/', 1)[0] in collections and p not in flat_loaded]
  extra = [named(p) for p in flat_loaded if p not in flat_fresh]
  shaped = [f'{named(p)} {tuple(flat_loaded[p].shape)} (the model: '
            f'{tuple(flat_fresh[p].shape)})'
            for p in flat_fresh if grouped(p) and p in flat_loaded
            and flat_loaded[p].shape != flat_fresh[p].shape]
  if missing or extra or shaped:
    listed = '; '.join(f'{kind} {len(items)}: {", ".join(items[:_SHOWN])}'
                       + (', ...' if len(items) > _SHOWN else '')
                       for kind, items in (('missing', missing), ('extra', extra),
                                           ('mis-shaped', shaped)) if items)
    raise UserError(f'{what} does not fit model {model!r}: {listed}. Its transferable '
                    f'groups are {", ".join(groups)}; the rest is the head, whose '
                    f'shape may differ.')
  out = {}
  for path, value in flat_fresh.items():
    given = flat_loaded.get(path)
    fits = given is not None and given.shape == value.shape
    out[path] = np.asarray(given, dtype=value.dtype) if fits else value
  whole = all(p in flat_loaded and flat_loaded[p].shape == v.shape
              for p, v in flat_fresh.items())
  return traverse_util.unflatten_dict(out, sep='/'), whole


def lacking(fresh: Mapping, loaded: Mapping) -> list[str]:
  """The model's collections (batch_stats, say) that the checkpoint lacks."""
  return sorted(set(fresh) - set(loaded))


def check(config: ml_collections.ConfigDict, groups: tuple[str, ...]) -> dict[str, dict]:
  """Each pretrained base's checkpoint, read and fitted to the model now (one
  clear error, before anything is written; base A and base B of a seed never
  the same network, by content): {base run id: {path, sha256}}."""
  out, read, bases = {}, {}, {}
  image_shape = tasks.model_input(config).image_shape
  for spec in experiments.study(config, len(groups)):
    path = path_of(config, spec.target, spec.seed)
    if spec.treatment != 'base' or not path:
      continue
    what = f'--config.{field(spec.target)}'
    if path not in read:
      classes = tasks.resolve(spec.split, config)[spec.target].classes
      model = registry.create(config.model, len(classes), config.axis_name)
      fresh = jax.eval_shape(lambda m=model: registry.init_variables(
          m, jax.random.PRNGKey(0), image_shape))
      loaded = load(path, what)
      fit(fresh, loaded, groups, f'{what} {path!r}', config.model)
      for collection in lacking(fresh, loaded):
        errors.warn(f'{what} {path!r} holds no {collection}: the model\'s own initial '
                    f'{collection} go with its transplanted groups.')
      read[path] = fingerprint(loaded)
    out[spec.run_id] = {'path': path, 'sha256': read[path]}
    pair = bases.setdefault((spec.split, spec.seed), {})
    pair[spec.target] = path
    if len(pair) == 2 and read[pair['A']] == read[pair['B']]:
      raise UserError(
          f'--config.base_a {pair["A"]!r} and --config.base_b {pair["B"]!r} are the same '
          f'network (sha256 {read[path][:12]}): every comparison of A and B would be of it '
          f'with itself. Give base B its own checkpoint, or unset base_b to train it here.')
  return out


def check_recorded(workdir: str, hashes: Mapping[str, dict]) -> None:
  """Refuse a workdir whose pretrained bases were other checkpoints."""
  held = results.read_pretrained(workdir)
  for run_id, now in hashes.items():
    was = held.get(run_id)
    if was and was['sha256'] != now['sha256']:
      raise UserError(
          f'The checkpoint of base {run_id} ({now["path"]}) has changed since this '
          f'workdir started (sha256 {now["sha256"][:12]}, recorded {was["sha256"][:12]}): '
          f'restore it, or use a new --workdir.')


def record(workdir: str, hashes: Mapping[str, dict]) -> None:
  """Adds `hashes` to WORKDIR/pretrained.json."""
  files.atomic_write_json(os.path.join(workdir, results.PRETRAINED_FILE),
                          {**results.read_pretrained(workdir), **hashes})


def import_base(grid, index: int, spec: experiments.RunSpec) -> results.Result | None:
  """A pretrained base instead of training one, for runner.Grid `grid`: its
  variables (the model's own init where the checkpoint has no value: a head
  of another shape) into its run directory as the final checkpoint, and, when
  the whole tree fits its task, its evaluation there as its result (steps 0)."""
  c, task, path = grid.run_config(spec), grid.task(spec), grid.pretrained[spec.run_id]
  label = f'[{index + 1}/{len(grid.specs)} {spec.run_id}]'
  model = registry.create(c.model, len(task.classes), c.axis_name)
  what = f'--config.{field(spec.target)}'
  with grid.progress.phase('io'):
    loaded = load(path, what)
  fresh = jax.device_get(grid.init_variables(spec, model))
  variables, whole = fit(fresh, loaded, grid.groups, f'{what} {path!r}', c.model)
  variables = jax.device_put(variables, steps.replicated(grid.mesh))
  tree = {'params': variables['params']}
  if len(variables) > 1:
    tree['model_state'] = {k: v for k, v in variables.items() if k != 'params'}
  with grid.progress.phase('io'):
    saver = checkpoints.RunCheckpoints(grid.workdir.checkpoint_dir(spec.run_id), keep=1)
    saver.save(c.total_steps, tree, {}, {'pretrained': path}, force=True)
    saver.close()
  if not whole:
    grid.log(f'{label} pretrained, from {path}: not trained here. Its head does not '
             f'fit the {len(task.classes)} classes of task {spec.target}, so it is not '
             f'evaluated.')
    return None
  return grid.save_evaluation(index, spec, model, variables,
                              f'pretrained, from {path}: not trained here', pretrained=path)
