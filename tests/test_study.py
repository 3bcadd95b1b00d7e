"""tfx_jax.Study from Python: the CLI's results and report, bitwise; a
KeyboardInterrupt, then run() again, as if uninterrupted; a model object and
arrays in memory through the runlocal grid; and the refusals, one line each."""

import csv
import os
import signal

import flax.linen as nn
import numpy as np
import pytest

import tfx_jax
from tfx_jax.data.sources import fashion_mnist
from tfx_jax.training import preemption

from conftest import RUNLOCAL, cli, copy_runs

SMALL = {'layers': (1,), 'analysis': {'run': False}}  # 6 runs: bases, B1B(+), A1B(+).
ARGS = ('--config.layers=(1,)', '--config.analysis.run=False')


def rows(workdir):
  """results.csv's rows, but the wall-time column, which no two runs share."""
  with open(os.path.join(workdir, 'results.csv')) as f:
    return [{k: v for k, v in r.items() if k != 'wall_s'} for r in csv.DictReader(f)]


def report(workdir):
  folder = os.path.join(workdir, 'report')
  return {name: open(os.path.join(folder, name), 'rb').read()
          for name in sorted(os.listdir(folder))}


@pytest.fixture(scope='module')
def cli_workdir(runlocal_grid, tmp_path_factory):
  """The CLI's workdir of SMALL: its six runs, trained uninterrupted in the
  session's runlocal grid, with results.csv and the report the CLI writes
  for them."""
  workdir = str(tmp_path_factory.mktemp('cli') / 'w')
  copy_runs(runlocal_grid[0], workdir, 'm_n-baseA-s0', 'm_n-baseB-s0', 'm_n-A1B-s0',
            'm_n-A1B+-s0', 'm_n-B1B-s0', 'm_n-B1B+-s0')
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}', *ARGS)
  assert result.returncode == 0, result.stderr[-3000:]
  assert ', 6 finished;' in result.stdout and ' step ' not in result.stdout
  return workdir


def test_interrupted_study_resumes_to_the_clis_results_and_report(
    cli_workdir, tmp_path, monkeypatch, capfd):
  """Ctrl-C in the second run (SIGINT to this process, as a kernel's interrupt
  sends it) saves its step; run() again resumes there, and the workdir ends as
  the CLI's uninterrupted one: results.csv bitwise but wall times, every
  report file bitwise."""
  workdir = str(tmp_path / 'w')
  study = tfx_jax.Study(workdir, RUNLOCAL, **SMALL)
  stepped = preemption.Watch.stepped

  def ctrl_c_at_step_29(self):  # 24 steps of base B, then step 5 of base A.
    stepped(self)
    if self.steps == 29:
      os.kill(os.getpid(), signal.SIGINT)

  monkeypatch.setattr(preemption.Watch, 'stepped', ctrl_c_at_step_29)
  handler = signal.getsignal(signal.SIGINT)
  with pytest.raises(KeyboardInterrupt, match=r'm_n-baseA-s0 at step 5; .*study\.run\(\)'):
    study.run()
  monkeypatch.setattr(preemption.Watch, 'stepped', stepped)
  assert signal.getsignal(signal.SIGINT) is handler  # Given back.
  capfd.readouterr()
  results = study.run()
  out = capfd.readouterr().out
  assert 'resuming m_n-baseA-s0 from step 5' in out and ', 1 finished;' in out
  assert rows(workdir) == rows(cli_workdir) and report(workdir) == report(cli_workdir)
  frame = results.frame
  assert len(frame) == 6 and frame['n'].dtype == np.int64 and frame['top1'].dtype == float
  assert list(frame['run_id']) == [r['run_id'] for r in rows(cli_workdir)]
  assert results.figure('figure2').get_size_inches()[0] > 1
  assert set(results.findings['id']) == {1, 2, 3, 4, 5, 6}
  again = study.run()  # Everything finished: trains nothing.
  out = capfd.readouterr().out
  assert ', 6 finished;' in out and ' step ' not in out
  assert again.frame.equals(tfx_jax.load(cli_workdir).frame.assign(wall_s=frame['wall_s']))


class TinyCNN(nn.Module):
  """A model defined outside any registry, as in a notebook's cell."""
  num_classes: int
  width: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(nn.Conv(self.width, (3, 3), strides=2, name='conv1')(x))
    x = nn.relu(nn.Conv(self.width, (3, 3), strides=2, name='conv2')(x))
    return nn.Dense(self.num_classes, name='head')(x.reshape((x.shape[0], -1)))


def fashion_arrays(name='fm', train=600, test=300):
  """The first images of Fashion-MNIST as arrays in memory (floats for train)."""
  xs, ys = fashion_mnist.load('train', None)
  xt, yt = fashion_mnist.load('test', None)
  return tfx_jax.data.arrays(train=(xs[:train] / 255.0, ys[:train]),
                             test=(xt[:test], yt[:test]), name=name)


ARRAY_FIELDS = {'split': 'random:0', 'only': ('base', 'transfer'), 'layers': (2,),
                'analysis': {'run': False}}


@pytest.fixture(scope='module')
def arrays_workdir(tmp_path_factory):
  """A linen class as the model and arrays as the data: base A, base B, A2B."""
  workdir = str(tmp_path_factory.mktemp('arrays') / 'w')
  results = tfx_jax.Study(workdir, RUNLOCAL, model=TinyCNN, data=fashion_arrays(),
                          **ARRAY_FIELDS).run()
  return workdir, results


def test_arrays_and_a_model_object_run_the_grid(arrays_workdir):
  workdir, results = arrays_workdir
  frame = results.frame
  assert sorted(frame['run_id']) == ['random0-A2B-s0', 'random0-baseA-s0', 'random0-baseB-s0']
  assert (frame['steps'] == 24).all() and (frame['top1'] > 0.3).all()  # 5 classes: chance 0.2.
  import json  # pylint: disable=import-outside-toplevel
  with open(os.path.join(workdir, 'objects.json')) as f:
    record = json.load(f)
  assert record['model']['name'] == 'test_study:TinyCNN'
  assert record['model']['shapes']['params/conv1/kernel'] == [3, 3, 1, 4]
  assert record['data'] == {'arrays:fm': fashion_arrays().sha256}
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  assert (config['dataset'], config['model']) == ('arrays:fm', 'test_study:TinyCNN')


def test_arrays_as_the_source_of_a_cross_dataset_grid(tmp_path):
  results = tfx_jax.Study(tmp_path / 'w', RUNLOCAL, data='digits', source_data=fashion_arrays(),
                          only=('base', 'transfer'), layers=(1,), analysis={'run': False},
                          model=TinyCNN(num_classes=1, width=4)).run()
  frame = results.frame
  assert set(frame['split']) == {'from:arrays:fm'} and len(frame) == 3
  base_a = frame[frame['treatment'].eq('base') & frame['target'].eq('A')]
  assert list(base_a['run_id']) == ['from_arraysfm-baseA-s0']
  assert float(base_a['best10_top1'].iloc[0]) > 0.15  # 10 classes of the arrays: chance 0.1.


def one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert '\n' not in message and excinfo.type is tfx_jax.errors.UserError, message
  return message


def test_a_resumed_study_with_other_objects_is_refused(arrays_workdir):
  workdir, _ = arrays_workdir
  with pytest.raises(tfx_jax.errors.UserError) as e:
    tfx_jax.Study(workdir, RUNLOCAL, model=TinyCNN(num_classes=5, width=8),
                  data=fashion_arrays(), **ARRAY_FIELDS).run()
  assert 'another architecture' in one_line(e) and 'params/conv1/kernel: 3x3x1x4 there' in str(
      e.value)
  with pytest.raises(tfx_jax.errors.UserError) as e:
    tfx_jax.Study(workdir, RUNLOCAL, model=TinyCNN, data=fashion_arrays(train=500),
                  **ARRAY_FIELDS).run()
  assert 'other arrays as' in one_line(e)


@pytest.mark.parametrize('train, test, num_classes, expected', [
    ((np.zeros((8, 28, 28), np.uint8), np.arange(8) % 2), None, None, 'NHWC, 4 axes'),
    (None, (np.zeros((4, 28, 28, 1), np.uint8), np.array([0, 1, 7, 1])), 4,
     'label 7 is out of range for 4 classes'),
    (None, (np.zeros((4, 28, 28, 1), np.uint8), np.array([0, 1, 1, 2])), None,
     'class 3 has no test image'),
    ((np.full((8, 28, 28, 1), np.nan), np.arange(8) % 4), None, None, 'NaN'),
])
def test_malformed_arrays_are_refused_in_one_line(train, test, num_classes, expected):
  good = (np.zeros((8, 28, 28, 1), np.uint8), np.arange(8) % 4)
  with pytest.raises(tfx_jax.errors.UserError) as e:
    tfx_jax.data.arrays(train=train or good, test=test or good, name='bad',
                        num_classes=num_classes)
  assert expected in one_line(e)


def test_bad_study_input_is_refused_in_one_line(tmp_path):
  arrays = tfx_jax.data.arrays(train=(np.zeros((8, 28, 28, 1), np.uint8), np.arange(8) % 4),
                               test=(np.zeros((4, 28, 28, 1), np.uint8), np.arange(4)),
                               name='four')
  for kwargs, expected in (
      ({'data': arrays}, "Dataset 'arrays:four' has no dissimilar (m_n) split"),
      ({'lyers': (1,)}, "Unknown config key 'lyers'. Did you mean 'layers'?"),
      ({'analysis': {'run': 'often'}}, 'Bad config value: config.analysis.run'),
      ({'model': 42}, 'model= is a int'),
  ):
    with pytest.raises(tfx_jax.errors.UserError) as e:
      tfx_jax.Study(tmp_path / 'w', RUNLOCAL, **kwargs).run()
    assert expected in one_line(e)
  assert not os.path.exists(tmp_path / 'w')  # Refused before anything was written.
  with pytest.raises(tfx_jax.errors.UserError) as e:
    tfx_jax.load(tmp_path)
  assert 'holds no results.csv' in one_line(e)
