"""Prepares ImageNet (ILSVRC2012) for training, without TensorFlow.

  python -m tfx_jax.prepare imagenet2012 --manual_dir=DIR --data_dir=OUT

What it writes, and how: tfx_jax/data/prepare.py.
"""

from absl import flags

from tfx_jax import errors
from tfx_jax.data import ilsvrc
from tfx_jax.data.prepare import prepare
from tfx_jax.errors import UserError

_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, f'Directory holding '
                                  f'{ilsvrc.TRAIN_TAR} and {ilsvrc.VALIDATION_TAR}.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Where to write (local or gs://); '
                                'then train with --config.data_dir=DATA_DIR. Default: '
                                '$TFDS_DATA_DIR or ~/tensorflow_datasets.')
_WORKERS = flags.DEFINE_integer('num_workers', 0, 'Processes; 0: one per core.')
_PER_SHARD = flags.DEFINE_integer('images_per_shard', 1024, 'Images per shard file.')


def main(argv):
  if len(argv) != 2 or argv[1] != 'imagenet2012':
    raise UserError('Usage: python -m tfx_jax.prepare imagenet2012 --manual_dir=DIR '
                    '[--data_dir=OUT]; imagenet2012 is the only dataset it prepares.')
  if not _MANUAL_DIR.value:
    raise UserError(f'--manual_dir is required: the directory holding {ilsvrc.TRAIN_TAR} '
                    f'and {ilsvrc.VALIDATION_TAR}.')
  prepare(_MANUAL_DIR.value, _DATA_DIR.value, num_workers=_WORKERS.value,
          images_per_shard=_PER_SHARD.value, log=lambda m: print(m, flush=True))


if __name__ == '__main__':
  errors.run(main)
