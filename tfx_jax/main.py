"""Runs a config's grid of transfer experiments, then writes its report.

  python -m tfx_jax.main --config=configs/m_n_split.py:dataset=fashion_mnist,runlocal
"""

import os
import sys

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from tfx_jax import runner
from tfx_jax.errors import UserError

config_flags.DEFINE_config_file('config', None, 'Config file, optionally '
                                'file.py:key=value,flag', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where runs, results and the report go '
                    '(default: runs/<config file name>).')
flags.DEFINE_string('coordinator_address', None, 'jax.distributed: host:port of process 0.')
flags.DEFINE_integer('num_processes', None, 'jax.distributed: number of processes.')
flags.DEFINE_integer('process_id', None, 'jax.distributed: this process index.')
flags.DEFINE_bool('verbose', False, 'Show Python tracebacks for input errors.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise UserError(f'Unexpected arguments {argv[1:]}; all options are --flags.')
  if FLAGS.coordinator_address or FLAGS.num_processes:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)
  config_name = os.path.splitext(os.path.basename(
      flags.FLAGS['config'].config_filename))[0]
  workdir = FLAGS.workdir or os.path.join('runs', config_name)
  logging.info('JAX devices: %s', jax.devices())
  runner.run(FLAGS.config, workdir)
  if FLAGS.config.report and jax.process_index() == 0:
    from tfx_jax import report  # pylint: disable=import-outside-toplevel
    report.write_report(workdir)
    print(f'Report: {os.path.join(workdir, "report")}', flush=True)


def run():
  try:
    app.run(main)
  except UserError as e:
    if FLAGS.is_parsed() and FLAGS.verbose:
      raise
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  run()
