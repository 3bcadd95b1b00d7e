"""The training loop of one run, in process: evaluation, checkpoints, resume
after a preemption to the same bits, and the stop on NaN."""

import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from tfx_jax import config as config_lib
from tfx_jax import progress
from tfx_jax.data import input_pipeline
from tfx_jax.models import optim, registry, surgery
from tfx_jax.training import metrics, preemption, prefetch, steps
from tfx_jax.training.loop import train_and_evaluate

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 4


class Batches:
  """Batch k is a pure function of k: resumable from {'next_batch': k}."""

  def __init__(self):
    self.next_batch = 0

  def __next__(self):
    rng = np.random.default_rng(self.next_batch)
    self.next_batch += 1
    return {'image': rng.normal(size=(8, *IMAGE_SHAPE)).astype(np.float32),
            'label': rng.integers(0, NUM_CLASSES, 8).astype(np.int32)}

  def get_state(self):
    return {'next_batch': self.next_batch}

  def set_state(self, state):
    self.next_batch = state['next_batch']


class StopAt:
  """A preemption watch that fires once `steps` train steps have been taken,
  as a SIGTERM would."""

  def __init__(self, steps=None):
    self.steps, self._at, self.signum = 0, steps, signal.SIGTERM

  def stepped(self):
    self.steps += 1

  def reached(self):
    return self.steps == self._at

  def received(self):
    return self.reached()


@pytest.fixture(scope='module')
def setup():
  model = registry.create('small', NUM_CLASSES)
  mesh = steps.make_mesh()
  params = registry.init_params(model, jax.random.PRNGKey(0), IMAGE_SHAPE)
  frozen = surgery.first_layers(2)
  opt = optim.make_optimizer(surgery.freeze_labels(params, frozen),
                             optim.make_schedule('step', 0.01, 8, step_size=4))
  step = steps.make_train_step(model, opt, frozen, mesh)
  eval_step = steps.make_eval_step(model, mesh)
  eval_batches = [next(Batches()) for _ in range(2)]

  def evaluate(variables):
    return steps.evaluate(eval_step, variables, eval_batches, 8, mesh)

  def fresh_state():
    return steps.create_state(params, opt, seed=0, mesh=mesh)
  return mesh, step, evaluate, fresh_state


def config(**overrides):
  c = config_lib.base_config()
  c.update({'total_steps': 8, 'eval_every': 2, 'log_every': 1, 'checkpoint_every': 4,
            'keep_checkpoints': 2, **overrides})
  return c


def loop(setup, run_dir, watch, data=None, **overrides):
  mesh, step, evaluate, fresh_state = setup
  logs = []
  state, history = train_and_evaluate(
      config(**overrides), 'r', str(run_dir), fresh_state(), step, evaluate,
      data or Batches(), mesh=mesh, watch=watch, progress=progress.Progress(),
      log=logs.append)
  return jax.device_get(state), history, logs


def test_preempted_run_resumes_to_the_same_bits(setup, tmp_path):
  reference, ref_history, logs = loop(setup, tmp_path / 'straight', StopAt())
  assert [h['step'] for h in ref_history] == [2, 4, 6, 8]
  assert len([line for line in logs if 'eval top1' in line]) == 4
  assert sorted(os.listdir(tmp_path / 'straight' / 'checkpoints')) == ['4', '8']

  run_dir = tmp_path / 'preempted'
  with pytest.raises(preemption.Preempted, match='at step 5'):
    loop(setup, run_dir, StopAt(5))
  assert '5' in os.listdir(run_dir / 'checkpoints')  # Saved at the current step.
  data = Batches()
  state, history, logs = loop(setup, run_dir, StopAt(), data=data)
  assert logs[0] == '  resuming r from step 5'
  assert data.next_batch == 8  # Batches 5, 6, 7 after the restored state.
  assert history == ref_history
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(a, b)
  lines = [json.loads(l) for l in (run_dir / 'metrics.jsonl').read_text().splitlines()]
  ref_lines = [json.loads(l) for l in
               (tmp_path / 'straight' / 'metrics.jsonl').read_text().splitlines()]
  assert lines == ref_lines  # No line lost or doubled around the preemption.


def test_finished_run_restores_without_training(setup, tmp_path):
  _, history, _ = loop(setup, tmp_path, StopAt())
  data = Batches()
  _, again, logs = loop(setup, tmp_path, StopAt(), data=data)
  assert again == history and data.next_batch == 8
  assert not [line for line in logs if 'eval top1' in line]


def test_nan_loss_stops_naming_the_step(setup, tmp_path):
  mesh, step, evaluate, fresh_state = setup

  def nan_after_3(state, batch):
    state, m = step(state, batch)
    return state, {**m, 'loss': m['loss'] * (np.nan if int(state.step) > 3 else 1.0)}

  with pytest.raises(metrics.DivergedError, match='Run r: loss is nan at step 4'):
    train_and_evaluate(config(log_every=2), 'r', str(tmp_path), fresh_state(),
                       nan_after_3, evaluate, Batches(), mesh=mesh,
                       watch=StopAt(), progress=progress.Progress(),
                       log=lambda _: None)


@pytest.mark.parametrize('workers', [0, 2])
def test_device_prefetch_resumes_on_exactly_the_next_batch(workers):
  """The state counts the batches taken, not those the thread put ahead."""
  mesh = steps.make_mesh()

  def pipeline():
    data = input_pipeline.train_iterator('fashion_mnist', (0, 1, 2, 3), batch_size=16,
                                         seed=3, num_workers=workers)
    return data, prefetch.DevicePrefetch(data, lambda b: steps.global_batch(b, mesh), 2)

  data, ahead = pipeline()
  try:
    taken = [jax.device_get(next(ahead)) for _ in range(5)]
    time.sleep(0.5)  # The thread fills its queue: batches 5 and 6 are on the devices.
    state = ahead.get_state()
    assert state == {'next_batch': 5}
    following = [jax.device_get(next(ahead)) for _ in range(2)]
    ahead.stop()
    assert data.get_state() == {'next_batch': 7}  # Rewound to what was taken.
  finally:
    ahead.stop()
    data.close()
  data, again = pipeline()
  try:
    again.set_state(state)
    for expected in following:
      got = jax.device_get(next(again))
      assert isinstance(got['image'], np.ndarray)
      np.testing.assert_array_equal(got['image'], expected['image'])
      np.testing.assert_array_equal(got['label'], expected['label'])
    assert not np.array_equal(taken[-1]['image'], following[0]['image'])
  finally:
    again.stop()
    data.close()


def test_device_prefetch_raises_the_pipelines_error_in_the_loops_thread():
  class Failing(Batches):
    def __next__(self):
      if self.next_batch == 3:
        raise OSError('shard unreadable')
      return super().__next__()

  ahead = prefetch.DevicePrefetch(Failing(), lambda b: b, 2)
  assert [next(ahead)['label'].shape for _ in range(3)] == [(8,)] * 3
  with pytest.raises(OSError, match='shard unreadable'):
    next(ahead)
  assert ahead.get_state() == {'next_batch': 3}
