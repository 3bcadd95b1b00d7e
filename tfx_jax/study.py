"""`tfx_jax.Study`: the grid of a config run from Python, a notebook's objects
included: a model class, instance or factory, and arrays as datasets.

    study = tfx_jax.Study('runs/mine', 'configs/m_n_split.py:dataset=fashion_mnist,runlocal',
                          model=CNN, data=tfx_jax.data.arrays(...), split='random:0')
    results = study.run()     # trains what is missing, writes the report
    results.frame             # results.csv as a DataFrame

`run()` is the CLI's main job in this process (tfx_jax/main.py): the same
checks first, resume, finished runs skipped, one job per workdir, the report
and its analysis. A model or arrays given as objects are registered in this
process under the names the config holds ('module:QualifiedName',
'arrays:NAME'); W/objects.json records the model's parameter shapes and the
arrays' sha256, and a later study whose objects differ is refused.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import importlib.util
import io
import json
import os

import jax
import ml_collections
from absl import flags, logging
from flax import nnx
from flax import linen as nn
from flax import traverse_util

from tfx_jax import config as config_lib
from tfx_jax import errors, files
from tfx_jax.data import tasks
from tfx_jax.data.sources import in_memory
from tfx_jax.errors import UserError
from tfx_jax.grid import checks, runner
from tfx_jax.models import registry
from tfx_jax.report import analysis, frames, writer
from tfx_jax.training import preemption

OBJECTS_FILE = 'objects.json'  # In the workdir: the model's shapes, the arrays' sha256.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # configs/ is here.


class Study:
  """One workdir's grid: `run()` trains what is missing and returns `Results`.

  `config`: what --config takes ('configs/m_n_split.py:dataset=fashion_mnist,
  runlocal', relative to the working directory or to the repository), a
  ConfigDict, or None (Fashion-MNIST, or `data`, on the random split).
  `model`: a name as --config.model takes, a flax.linen Module class or
  instance, an nnx.Module class, or a factory f(num_classes).
  `data`, `source_data`: a dataset name or `tfx_jax.data.arrays(...)`.
  `fields`: any config field by its --config. name, nested ones as dicts
  (`layers=(1, 2)`, `analysis={'run': False}`).
  """

  def __init__(self, workdir: str | os.PathLike, config=None, *, model=None, data=None,
               source_data=None, **fields):
    self.workdir = os.fspath(workdir)
    try:
      self.config = _config(config, data)
      set_fields(self.config, fields)
      self._arrays = {}
      for field, value in (('dataset', data), ('source_dataset', source_data)):
        if isinstance(value, in_memory.ArrayDataset):
          self._arrays[value.name] = value
          value = value.name
        if value is not None:
          set_fields(self.config, {field: value})
      self._model = model if model is not None and not isinstance(model, str) else None
      if model is not None:
        name = model if isinstance(model, str) else registry.register(*_factory(model))
        set_fields(self.config, {'model': name})
      if self._arrays and self.config.num_workers > 0:
        raise UserError(f'config.num_workers={self.config.num_workers}: arrays in memory load '
                        f'in this process; set num_workers=0.')
    except UserError as e:
      raise UserError(str(e)) from None  # One line, not the library's frames.
    self.config.lock()

  def __repr__(self) -> str:
    return f'Study({self.workdir!r}, model={self.config.model!r}, dataset={self.config.dataset!r})'

  def run(self) -> frames.Results | None:
    """Trains what is missing (the CLI's rules), writes the report, returns the
    results (None while another sweep shard's runs are unfinished). A Ctrl-C
    (KeyboardInterrupt) saves the current step: the next run() resumes there."""
    if not flags.FLAGS.is_parsed():  # A notebook has no command line of ours.
      flags.FLAGS.mark_as_parsed()
    for dataset in self._arrays.values():  # This study's, whatever was registered since.
      in_memory.register(dataset)
    if self._model is not None:
      registry.register(*_factory(self._model))
    verbosity = logging.get_verbosity()
    if not flags.FLAGS.verbose:  # As the CLI: Orbax's and JAX's logs stay off the output.
      logging.set_verbosity(logging.ERROR)
    try:
      record = self._record()
      _check_record(self.workdir, record)
      with contextlib.redirect_stdout(io.StringIO()):  # runner.run prints its layer groups.
        checks.prepare(self.config, self.workdir)
      if record and jax.process_index() == 0:
        files.atomic_write_json(os.path.join(self.workdir, OBJECTS_FILE), record)
      complete = runner.run(self.config, self.workdir)
      if complete and self.config.report and jax.process_index() == 0:
        writer.write_report(self.workdir)
        print(f'Report: {os.path.join(self.workdir, "report")}', flush=True)
        if self.config.analysis.run:
          print(analysis.at_end(self.workdir, self.config, jax.process_count()), flush=True)
    except UserError as e:
      raise UserError(str(e)) from None
    except preemption.Preempted as e:  # The step is saved; a notebook sees an interrupt.
      raise KeyboardInterrupt(str(e).replace('the same command', 'study.run()')) from None
    finally:
      logging.set_verbosity(verbosity)
    return frames.load(self.workdir) if complete else None

  def _record(self) -> dict:
    """What objects.json holds for this study: the model object's name and
    parameter shapes, the arrays' sha256 by dataset name."""
    record = {}
    if self._model is not None:
      c = self.config
      shapes = registry.variable_shapes(
          registry.create(c.model, registry.CHECK_CLASSES, c.axis_name),
          tasks.model_input(c).image_shape)
      flat = traverse_util.flatten_dict(dict(shapes), sep='/')
      record['model'] = {'name': c.model, 'classes': registry.CHECK_CLASSES,
                         'shapes': {k: list(v.shape) for k, v in flat.items()}}
    if self._arrays:
      record['data'] = {name: d.sha256 for name, d in sorted(self._arrays.items())}
    return record


def _check_record(workdir: str, record: dict) -> None:
  """Refuses a workdir whose objects.json has another model architecture or
  other arrays under a name this study uses."""
  path = os.path.join(workdir, OBJECTS_FILE)
  if not record or not files.exists(path):
    return
  held = json.loads(files.read_text(path))
  model, old = record.get('model'), held.get('model')
  if model and old and model != old:
    mine, theirs = model['shapes'], old['shapes']
    differ = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k] != theirs[k]]
    where = differ[0]
    shape = lambda s: 'x'.join(map(str, s[where])) if where in s else 'absent'
    raise UserError(f'Workdir {workdir!r} was trained with another architecture of model '
                    f'{old["name"]!r} ({where}: {shape(theirs)} there, {shape(mine)} here); '
                    f'use another workdir, or the model it was trained with.')
  for name, sha in record.get('data', {}).items():
    was = held.get('data', {}).get(name)
    if was and was != sha:
      raise UserError(f'Workdir {workdir!r} was trained on other arrays as {name!r} (sha256 '
                      f'{was[:12]} there, {sha[:12]} here); use another workdir, or the '
                      f'arrays it was trained on.')


def _factory(model) -> tuple[str, object]:
  """(the config's name for `model`, its factory(num_classes)) of a model object."""
  if isinstance(model, nnx.Module):
    raise UserError(f'model= is an nnx.Module instance ({type(model).__name__}); pass its '
                    f'class, or a factory(num_classes, rngs): each run builds its own.')
  if isinstance(model, nn.Module):
    cls = type(model)
    if 'num_classes' in {f.name for f in dataclasses.fields(model)}:
      factory = lambda num_classes: model.clone(num_classes=num_classes)
    else:
      factory = lambda num_classes: model  # Its own head; the registry checks its size.
    return f'{cls.__module__}:{cls.__qualname__}', factory
  if not callable(model):
    raise UserError(f'model= is a {type(model).__name__}; give a model name, a flax.linen '
                    f'Module class or instance, an nnx.Module class or a factory(num_classes).')
  base = model
  while hasattr(base, 'func'):  # functools.partial
    base = base.func
  module = getattr(base, '__module__', None) or '__main__'
  qualname = getattr(base, '__qualname__', None) or type(base).__qualname__
  return f'{module}:{qualname}', model


def _config(config, data) -> ml_collections.ConfigDict:
  """A ConfigDict (copied), a --config string loaded, or for None the random
  split of `data` (a dataset name or arrays; default Fashion-MNIST) with its
  preset, or OWN_DATA_PRESET's solver."""
  if isinstance(config, ml_collections.ConfigDict):
    c = copy.deepcopy(config)
    c.unlock()
    return c
  if config is None:
    c = config_lib.base_config()
    name = str(data) if data is not None else 'fashion_mnist'
    if name in config_lib.DATASET_PRESETS:
      config_lib.apply_dataset(c, name)
    else:
      c.update(config_lib.OWN_DATA_PRESET)
    c.split = 'random:0'
    return c
  if not isinstance(config, (str, os.PathLike)):
    raise UserError(f'config= is a {type(config).__name__}; give what --config takes '
                    f'(\'configs/m_n_split.py:runlocal\'), a ConfigDict or None.')
  return load_config(os.fspath(config))


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'path.py[:arg]' as --config loads it: get_config(arg), or get_config()."""
  path, colon, arg = spec.partition(':')
  found = next((p for p in (path, os.path.join(ROOT, path)) if os.path.isfile(p)), None)
  if found is None:
    raise UserError(f'Config file {path!r} does not exist (here or in {ROOT}); pass an '
                    f'existing file, e.g. configs/default.py.')
  module_spec = importlib.util.spec_from_file_location(
      f'tfx_jax_config_{os.path.splitext(os.path.basename(found))[0]}', found)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'Config file {path!r} failed to load: {errors.explain(e)}') from e
  if not hasattr(module, 'get_config'):
    raise UserError(f'Config file {path!r} has no get_config(); a config file defines '
                    f'get_config(arg=None), as configs/m_n_split.py does.')
  c = module.get_config(arg) if colon else module.get_config()
  c = copy.deepcopy(c)
  c.unlock()
  return c


def set_fields(c: ml_collections.ConfigDict, fields: dict, prefix: str = '') -> None:
  """Sets config fields by their --config. names, nested ones from dicts; an
  unknown name or a value of the wrong type is a UserError of one line."""
  for key, value in fields.items():
    name = f'{prefix}{key}'
    if key not in c:
      close = difflib.get_close_matches(key, list(c.keys()), n=1)
      hint = f' Did you mean {close[0]!r}?' if close else ''
      raise UserError(f'Unknown config key {name!r}.{hint} The fields are listed in '
                      f'tfx_jax/config.py.')
    current = c[key]
    if isinstance(current, ml_collections.ConfigDict):
      if not isinstance(value, dict):
        raise UserError(f'config.{name} is a group of fields; give a dict, e.g. '
                        f'{key}={{{next(iter(current.keys()))!r}: ...}}.')
      set_fields(current, value, f'{name}.')
      continue
    if isinstance(current, tuple) and not isinstance(value, tuple):
      value = tuple(value) if isinstance(value, list) else (value,)
    try:
      c[key] = value
    except (TypeError, ValueError) as e:
      raise UserError(f'Bad config value: config.{name}={value!r}: '
                      f'{" ".join(str(e).split())[:200]}') from None
