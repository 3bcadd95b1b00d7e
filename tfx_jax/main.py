"""Runs a config's grid of transfer experiments, then writes its report, as in
`python -m tfx_jax.main --config=configs/m_n_split.py:dataset=fashion_mnist,runlocal`."""

import os
import sys

from absl import flags, logging

from tfx_jax import errors
from tfx_jax.grid import fields
from tfx_jax.training import malloc

errors.define_config_and_workdir('Where runs, results and the report go (default: '
                                 'runs/<config file name>).')
flags.DEFINE_bool('multihost', False, 'Start jax.distributed with auto-detection (every '
                  'worker of a TPU VM pod slice, or SLURM).')
flags.DEFINE_string('coordinator_address', None, 'jax.distributed: host:port of process 0.')
flags.DEFINE_integer('num_processes', None, 'jax.distributed: number of processes.')
flags.DEFINE_integer('process_id', None, 'jax.distributed: this process index.')
flags.DEFINE_string('compilation_cache', '~/.cache/tfx_jax/xla', 'Persistent XLA compilation '
                    'cache directory; empty to disable.')
flags.DEFINE_bool('tune_malloc', True, 'glibc malloc: one arena, no mmap, no trimming '
                  '(tfx_jax/training/malloc.py), when the JAX backend is the CPU: XLA CPU '
                  'steps run about 25% faster.')
flags.DEFINE_integer('local_shards', 1, 'Run the sweep as this many processes, each pinned to '
                     'its share of the CPUs and seeing its share of the GPUs (small nets train '
                     'faster so); 0: one per CPU that memory allows, one per GPU, 1 on TPUs.')
flags.mark_flags_as_required(['config'])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise errors.UserError(f'Unexpected arguments {argv[1:]}; all options are --flags.')
  config = errors.loaded_config(FLAGS)
  fields.check(config)  # A bad value is refused at once; importing JAX takes seconds.
  if FLAGS.tune_malloc and malloc.backend_is_cpu():
    malloc.tune()  # Before JAX starts its threads.
  import jax  # pylint: disable=g-import-not-at-top
  from tfx_jax.grid import checks, local_shards, runner  # pylint: disable=g-import-not-at-top
  if FLAGS.compilation_cache:  # Compiled steps persist: resumes and reruns skip compiling.
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(FLAGS.compilation_cache))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)  # The small ones too.
  distributed = bool(FLAGS.multihost or FLAGS.coordinator_address or FLAGS.num_processes)
  shards, gpus = local_shards.resolve(FLAGS.local_shards, distributed, config.sweep.num_shards)
  if gpus:  # This process only checks and waits: the shards hold the GPUs.
    jax.config.update('jax_platforms', 'cpu')
  if distributed:
    # CPU collectives need gloo (GPUs, TPUs ignore it); unset flags: auto-detect (TPU VM, SLURM).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  config_name = os.path.splitext(os.path.basename(FLAGS['config'].config_filename))[0]
  workdir = FLAGS.workdir or os.path.join('runs', config_name)
  logging.info('JAX devices: %s', jax.devices())
  if shards > 1:
    checks.prepare(config, workdir)  # Here first: one message, not one a shard.
    local_shards.run(sys.argv[1:], shards, gpus)  # Returns when every shard is done.
  complete = shards > 1 or runner.run(config, workdir)
  if complete and config.report and jax.process_index() == 0:
    from tfx_jax.report import analysis, writer  # pylint: disable=g-import-not-at-top
    writer.write_report(workdir)
    print(f'Report: {os.path.join(workdir, "report")}', flush=True)
    if config.analysis.run:
      print(analysis.at_end(workdir, config, jax.process_count()), flush=True)


def run():
  try:
    errors.run(main, '--workdir', 'a rerun keeps the finished runs and resumes the others')
  except errors.Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_code)
  except KeyboardInterrupt:  # Ctrl-C before the runs' watch, or on several hosts.
    print('Interrupted (Ctrl-C); runs resume from their last saved checkpoint.', file=sys.stderr)
    sys.exit(errors.INTERRUPTED)


if __name__ == '__main__':
  run()
