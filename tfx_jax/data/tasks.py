"""Tasks: the dataset and classes that each of a grid's networks trains on.

On one dataset, tasks A and B are the halves a split names (`splits.resolve`).
Across datasets (split 'from:<source>'), A is every class of the source
dataset (or those listed: 'fashion_mnist:0-4') and B every class of the
target. Every task is fed at one model input, the source's: the target's
images are resized and their channels converted to it (`datasets.fed_at`).
"""

from __future__ import annotations

import dataclasses
import re

from tfx_jax.data import datasets, splits
from tfx_jax.data.datasets import DatasetSpec
from tfx_jax.errors import UserError

FROM = 'from:'
ALL = 'all'
# The shift experiment's splits, 'shift:<shift>' (docs/shift/): A the clean
# dataset, every class (subpopulation: its source side), B the shifted one.
# 'shift:clean' has A alone: the source base every shift but subpopulation shares.
SHIFT, CLEAN = 'shift:', 'clean'


@dataclasses.dataclass(frozen=True)
class Task:
  data: DatasetSpec  # Fed at the model's input.
  classes: tuple[int, ...]
  data_dir: str | None = None  # Where its dataset is.


def parse_source(source: str) -> tuple[str, tuple[int, ...] | None]:
  """'fashion_mnist' -> ('fashion_mnist', None); 'x:0-4,7' -> ('x', (0..4, 7))."""
  name, colon, tail = source.rpartition(':')
  if colon and re.fullmatch(r'[\d,\s-]+', tail):
    return name, splits.parse_classes(tail)
  return source, None


def spec(name: str, config, source: bool = False) -> DatasetSpec:
  """Dataset `name`'s spec, with the config's image_size and splits, from
  data_dir (source_data_dir for the source dataset)."""
  return datasets.dataset_spec(name, data_dir(config, source), config.get('image_size'),
                               config.get('train_split'), config.get('eval_split'))


def data_dir(config, source: bool = False) -> str | None:
  return config.get('source_data_dir') if source else config.get('data_dir')


def model_input(config) -> DatasetSpec:
  """The spec whose image shape the model takes: the source's across datasets."""
  source = config.get('source_dataset')
  return (spec(parse_source(source)[0], config, source=True) if source
          else spec(config.dataset, config))


def resolve(split: str, config) -> dict[str, Task]:
  """The tasks ('A' and 'B', or 'all') that `split` gives under `config`
  (its dataset, source_dataset, data_dir, image_size and splits); a UserError
  for a task of fewer than 2 classes, on which a network learns nothing (loss
  0, top-1 1.0 from the first step)."""
  resolved = _resolve(split, config)
  for name, task in resolved.items():
    if len(task.classes) >= 2:
      continue
    if name == ALL:
      what, fix = f'Dataset {config.dataset}', 'use a dataset of 2 or more classes'
    elif split.startswith('random:'):
      what = f'Split {split!r} of {config.dataset} ({task.data.num_classes} classes): half {name}'
      fix = 'a random split needs 4 or more classes; use custom:<A>/<B> or another dataset'
    else:
      what = f'Split {split!r}: {"task" if split.startswith(FROM) else "half"} {name}'
      fix = 'give each at least 2 classes'
    raise UserError(f'{what} has {len(task.classes)} class: a network trained on one '
                    f'class learns nothing (loss 0, top-1 1.0); {fix}.')
  return resolved


def _resolve(split: str, config) -> dict[str, Task]:
  target = spec(config.dataset, config)
  if split.startswith(FROM):
    name, classes = parse_source(split[len(FROM):])
    source = spec(name, config, source=True)
    if classes is None:
      classes = tuple(range(source.num_classes))
    else:
      splits.check_classes(classes, source.num_classes, f'source_dataset {name!r}')
    return {'A': Task(source, tuple(sorted(classes)), data_dir(config, True)),
            'B': Task(datasets.fed_at(target, source), tuple(range(target.num_classes)),
                      data_dir(config))}
  source_dataset = config.get('source_dataset')
  fed = datasets.fed_at(target, model_input(config))
  if split.startswith(SHIFT):
    return _shifted(split[len(SHIFT):], fed, data_dir(config))
  if split == ALL:
    return {ALL: Task(fed, tuple(range(target.num_classes)), data_dir(config))}
  if source_dataset:
    raise UserError(f'Split {split!r} with source_dataset {source_dataset!r}: across '
                    f'datasets the split is {FROM}{source_dataset}.')
  a, b = splits.resolve(split, config.dataset, target.num_classes)
  return {'A': Task(fed, tuple(a), data_dir(config)), 'B': Task(fed, tuple(b), data_dir(config))}


def _shifted(name: str, fed: DatasetSpec, where: str | None) -> dict[str, Task]:
  """The tasks of split 'shift:<name>' on the dataset `fed` (docs/shift/).
  The shifted datasets' seed is 0: one dataset per shift; seeds vary the runs."""
  from tfx_jax.data import shifts  # pylint: disable=import-outside-toplevel  # Loads OpenCV.
  every = tuple(range(fed.num_classes))
  if name == CLEAN:
    return {'A': Task(fed, every, where)}
  shift = shifts.parse(name)
  if shift.name == 'subpopulation':
    split = shifts.subpopulation(fed.name, fed.num_classes)
    superclasses = tuple(range(len(split.superclass_names)))
    return {task: Task(shifts.shifted_spec(fed, shift, side=side), superclasses, where)
            for task, side in zip('AB', shifts.SIDES)}
  return {'A': Task(fed, every, where), 'B': Task(shifts.shifted_spec(fed, shift), every, where)}

