"""Prepares datasets for training, without TensorFlow:

  python -m tfx_jax.prepare imagenet2012 --manual_dir=DIR --data_dir=OUT
  python -m tfx_jax.prepare folder --source_dir=DIR --data_dir=OUT --name=NAME

What they write, and how: tfx_jax/data/sources/prepare.py and tfx_jax/data/sources/folders.py.
"""

import sys

from absl import flags

from tfx_jax import errors
from tfx_jax.data.sources import folders, ilsvrc, jpeg_shards
from tfx_jax.data.sources.prepare import prepare
from tfx_jax.errors import UserError

_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, f'imagenet2012: the directory holding '
                                  f'{ilsvrc.TRAIN_TAR} and {ilsvrc.VALIDATION_TAR}.')
_SOURCE_DIR = flags.DEFINE_string('source_dir', None, 'folder: the directory of images, one '
                                  'subfolder per class (or train/ and test/ of those).')
_NAME = flags.DEFINE_string('name', None, 'folder: the dataset\'s name; train with '
                            '--config.dataset=folder:NAME.')
_SIZE = flags.DEFINE_integer('size', 0, 'folder: the side images are stored at; 0: their '
                             'own (the median larger side, at most 256).')
_EVAL_FRACTION = flags.DEFINE_float('eval_fraction', 0.2, 'folder without a test/ '
                                    'folder: the stratified part of each class held out.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Where to write (local or gs://); '
                                'then train with --config.data_dir=DATA_DIR. Default: '
                                '$TFDS_DATA_DIR or ~/tensorflow_datasets.')
_WORKERS = flags.DEFINE_integer('num_workers', 0, 'Processes; 0: one per core.')
_PER_SHARD = flags.DEFINE_integer('images_per_shard', 1024, 'Images per shard file.')
USAGE = ('Usage: python -m tfx_jax.prepare imagenet2012 --manual_dir=DIR [--data_dir=OUT], '
         'or python -m tfx_jax.prepare folder --source_dir=DIR --name=NAME [--data_dir=OUT].')


def main(argv):
  if len(argv) != 2 or argv[1] not in ('imagenet2012', 'folder'):
    raise UserError(USAGE)
  try:
    _prepare(argv[1])
  except OSError as e:
    fault = errors.write_fault(e, _DATA_DIR.value or jpeg_shards.default_data_dir(),
                               '--data_dir')
    if not fault:
      raise
    raise UserError(f'{fault} A rerun keeps the shards written.') from e


def _prepare(what: str) -> None:
  log = lambda m: print(m, flush=True)  # noqa: E731
  if what == 'folder':
    if not _SOURCE_DIR.value or not _NAME.value:
      raise UserError('folder needs --source_dir=DIR (one subfolder per class) and '
                      '--name=NAME (then --config.dataset=folder:NAME).')
    folders.prepare_folder(_SOURCE_DIR.value, _DATA_DIR.value, _NAME.value, size=_SIZE.value,
                           eval_fraction=_EVAL_FRACTION.value, num_workers=_WORKERS.value,
                           images_per_shard=_PER_SHARD.value, log=log)
    return
  if not _MANUAL_DIR.value:
    raise UserError(f'--manual_dir is required: the directory holding {ilsvrc.TRAIN_TAR} '
                    f'and {ilsvrc.VALIDATION_TAR}.')
  prepare(_MANUAL_DIR.value, _DATA_DIR.value, num_workers=_WORKERS.value,
          images_per_shard=_PER_SHARD.value, log=log)


def run():
  try:
    errors.run(main)
  except KeyboardInterrupt:  # Workers ignore SIGINT (data/sources/prepare.py): one line.
    print('Interrupted (Ctrl-C); the shards written are kept: run the same command again '
          'to resume.', file=sys.stderr)
    sys.exit(errors.INTERRUPTED)


if __name__ == '__main__':
  run()
