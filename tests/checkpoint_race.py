"""One of two processes restoring the same run whose newest checkpoint is
unreadable (tests/test_scale_out.py): argv COORDINATOR PROCESS_ID DIRECTORY LOG.

Writes to LOG the step restored and how many times this process moved a
checkpoint aside."""

import json
import sys
import time

import jax
import numpy as np

if __name__ == '__main__':
  coordinator, process_id, directory, log = sys.argv[1:]
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator, 2, int(process_id))
  from tfx_jax import files  # pylint: disable=g-import-not-at-top
  from tfx_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  moves, move = [], files.move

  def slow_move(source, destination):
    moves.append(source)
    time.sleep(1.0)  # Wide open: a process that did not wait would see the half-moved step.
    move(source, destination)
  files.move = slow_move
  mesh = jax.make_mesh((jax.device_count(),), ('data',))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  like = {'w': jax.make_array_from_process_local_data(replicated, np.zeros(4, np.float32))}
  ckpts = checkpoints.RunCheckpoints(directory)
  state, data, meta = ckpts.restore_latest(like)
  ckpts.close()
  with open(log, 'w') as f:
    json.dump({'step': meta['step'], 'w': np.asarray(state['w'].addressable_data(0)).tolist(),
               'moves': len(moves)}, f)
