"""Which layers to tune, and how: each treatment does what its name says, read
from its trained checkpoints; the solver's L2-SP and layer-wise rates against
hand-computed updates; WiSE's ends; the paper's treatments as before."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from conftest import NUMBERS, ROOT, RUNLOCAL, cli, cli_command, copy_runs, results, shared_grid
from tfx_jax.data import input_pipeline
from tfx_jax.errors import UserError
from tfx_jax.grid import checks, experiments
from tfx_jax.models import optim, plan as plan_lib, registry, surgery
from tfx_jax.training import checkpoints, feature_cache, steps

import flax_resnet

GROUPS = surgery.TRANSFERABLE  # The small preset's conv1..fc7.
TUNE = ('surgical', 'linear_probe', 'lp_ft', 'l2sp', 'llrd')
ONLY = f'--config.only={",".join(TUNE)}'
TUNE_CONFIG = ml_collections.ConfigDict({'probe_fraction': 0.5, 'l2sp_alpha': 0.1,
                                         'l2sp_beta': 0.01, 'layer_decay': 0.75})
# The commit before run plans: the paper's treatments must compute what it computed.
BEFORE_PLANS = '31d1acfe72cdc214b067093f534c6ed0aee46076'


@pytest.fixture(scope='session')
def tune_grid(tmp_path_factory, worker_id):
  """The five treatments at n = 1, 3, 7 on the runlocal grid (the small preset),
  with the defaults a user gets (report and analysis on); every checkpoint
  kept (a logistics field), so LP-FT's probe steps can be read back. Its
  workdir; its stdout is in WORKDIR.stdout."""
  return shared_grid(tmp_path_factory, worker_id, 'tune_grid', f'--config={RUNLOCAL}', ONLY,
                     '--config.layers=1,3,7', '--config.keep_checkpoints=3')[0]


def _variables(workdir, run_id, step, classes, model='small', shape=(28, 28, 1)):
  """A run's checkpointed variables at `step`, flat ('params/conv1/kernel')."""
  like = registry.init_variables(registry.create(model, classes), jax.random.PRNGKey(0), shape)
  directory = os.path.join(workdir, 'runs', run_id, 'checkpoints')
  return traverse_util.flatten_dict(checkpoints.load_variables(directory, step, like), sep='/')


def _init(run_id_spec, classes, model='small', shape=(28, 28, 1)):
  """The run's own fresh initialisation, as the runner makes it."""
  variables = registry.init_variables(registry.create(model, classes),
                                      jax.random.PRNGKey(run_id_spec.init_seed), shape)
  return traverse_util.flatten_dict(variables, sep='/')


def _group(path, groups=GROUPS):
  """The group index (1-based) of a flat variables path; 0 for the head."""
  inner = path.split('/', 1)[1]
  for g, name in enumerate(groups, 1):
    if any(inner == p or inner.startswith(p + '/') for p in name.split('+')):
      return g
  return 0


def _spec(treatment, n):
  return experiments.RunSpec('m_n', treatment, 'A', 'B', n, 0)


def test_surgical_changes_only_its_group_and_the_head(tune_grid):
  base = _variables(tune_grid, 'm_n-baseA-s0', 24, 6)
  for k in (1, 3, 7):
    spec = _spec('surgical', k)
    run, init = _variables(tune_grid, spec.run_id, 24, 4), _init(spec, 4)
    for path, value in run.items():
      g = _group(path)
      if g and g != k:
        np.testing.assert_array_equal(value, base[path], err_msg=f'{spec.run_id} {path}')
      elif g == k:
        assert not np.array_equal(value, base[path]), f'{spec.run_id}: {path} did not train'
      else:
        assert not np.array_equal(value, init[path]), f'{spec.run_id}: head {path} did not train'


def test_linear_probe_changes_only_the_head(tune_grid):
  spec = _spec('linear_probe', 7)
  assert spec.run_id in results(tune_grid)
  base, run, init = (_variables(tune_grid, 'm_n-baseA-s0', 24, 6),
                     _variables(tune_grid, spec.run_id, 24, 4), _init(spec, 4))
  heads = [p for p in run if not _group(p)]
  assert heads and all(not np.array_equal(run[p], init[p]) for p in heads)
  for path in run:
    if _group(path):
      np.testing.assert_array_equal(run[path], base[path], err_msg=path)


def test_lp_ft_groups_hold_through_the_probe_then_change(tune_grid):
  """Probe steps: 0.5 of 24 = 12; checkpoints at 8 (in the probe) and 24."""
  base = _variables(tune_grid, 'm_n-baseA-s0', 24, 6)
  spec = _spec('lp_ft', 3)
  at8, at24, init = (_variables(tune_grid, spec.run_id, 8, 4),
                     _variables(tune_grid, spec.run_id, 24, 4), _init(spec, 4))
  for path in at8:
    g = _group(path)
    before = base[path] if 1 <= g <= 3 else init[path]
    if g:
      np.testing.assert_array_equal(at8[path], before, err_msg=path)
      assert not np.array_equal(at24[path], before), f'{path} did not train after the probe'
    else:
      assert not np.array_equal(at8[path], init[path]), f'head {path} did not train'


def test_wise_ends(tune_grid):
  """a = 1 is the run itself: its top-1 evaluated again equals the run's; a = 0
  holds exactly the transferred values in the copied groups."""
  rows = results(tune_grid)
  wise = [r for r in rows.values() if r['treatment'] in experiments.WISE_TREATMENTS]
  assert len(wise) == 3 * 4
  assert all(r['wise_top1_1'] == r['top1'] for r in wise)
  assert rows['m_n-A7B_linear_probe-s0']['wise_top1_0'] == ''  # Not fine-tuned.
  assert any(r['wise_top1_0'] != r['top1'] for r in wise)
  base = _variables(tune_grid, 'm_n-baseA-s0', 24, 6)
  run = _variables(tune_grid, 'm_n-A3B_l2sp-s0', 24, 4)
  def params(flat):
    return traverse_util.unflatten_dict(
        {k.split('/', 1)[1]: v for k, v in flat.items() if k.startswith('params/')}, sep='/')

  mixed = traverse_util.flatten_dict(plan_lib.interpolate(
      params(run), params(base), 0.0, surgery.first_layers(3)), sep='/')
  for path, value in mixed.items():
    if _group('params/' + path) in range(1, 4):
      np.testing.assert_array_equal(value, base['params/' + path], err_msg=path)
    else:
      np.testing.assert_array_equal(value, run['params/' + path], err_msg=path)


def test_report_shows_the_treatments(tune_grid):
  with open(os.path.join(tune_grid, 'report', 'tune.md')) as f:
    text = f.read()
  for label in ('surgical', 'linear probe', 'LP-FT', 'L2-SP', 'LLRD', 'WiSE'):
    assert label in text
  for name in ('tune_m_n.png', 'wise_m_n.png'):
    assert os.path.getsize(os.path.join(tune_grid, 'report', name)) > 10_000


def _tree():
  """A 3-group network with a head, as params."""
  rng = np.random.default_rng(0)
  def layer():
    return {'kernel': rng.normal(size=(3, 2)).astype(np.float32),
            'bias': rng.normal(size=(2,)).astype(np.float32)}

  return {'g1': layer(), 'g2': layer(), 'g3': layer(), 'head': layer()}


def test_l2sp_first_update_is_the_gradient_of_its_penalty():
  """Zero loss gradient, parameters moved away from where the optimizer started:
  the first update is -lr * (alpha (w - w0)) on copied weights, -lr * beta * w on
  the others, 0 on biases (no decay, as the paper's solver)."""
  names, lr, alpha, beta = ('g1', 'g2', 'g3'), 0.1, 0.3, 0.02
  spec = _spec('l2sp', 2)
  tune = ml_collections.ConfigDict({**TUNE_CONFIG, 'l2sp_alpha': alpha, 'l2sp_beta': beta})
  plan = spec.plan(3, tune, 24)
  w0 = _tree()
  w = jax.tree.map(lambda x: x + 0.5, w0)
  opt = optim.plan_optimizer(w0, names, plan, lambda _: lr, momentum=0.9, weight_decay=5e-4,
                             bias_lr_mult=2.0)
  updates, _ = opt.update(jax.tree.map(np.zeros_like, w), opt.init(w0), w)
  for layer in names + ('head',):
    decay = alpha * (w[layer]['kernel'] - w0[layer]['kernel']) if layer in ('g1', 'g2') \
        else beta * w[layer]['kernel']
    np.testing.assert_allclose(updates[layer]['kernel'], -lr * decay, rtol=1e-6)
    np.testing.assert_array_equal(updates[layer]['bias'], 0)


def test_layer_decay_reaches_each_groups_update():
  """A unit gradient, no weight decay: group g's first update is -lr * d^(L-g)
  (biases 2x), the head's -lr. timm once shipped a decay that did nothing."""
  names, lr, decay = ('g1', 'g2', 'g3'), 0.1, 0.5
  plan = _spec('llrd', 3).plan(3, ml_collections.ConfigDict({**TUNE_CONFIG,
                                                             'layer_decay': decay}), 24)
  params = _tree()
  opt = optim.plan_optimizer(params, names, plan, lambda _: lr, momentum=0.9,
                             weight_decay=0.0, bias_lr_mult=2.0)
  updates, _ = opt.update(jax.tree.map(np.ones_like, params), opt.init(params), params)
  for layer, mult in (('g1', 0.25), ('g2', 0.5), ('g3', 1.0), ('head', 1.0)):
    np.testing.assert_allclose(updates[layer]['kernel'], -lr * mult, rtol=1e-6)
    np.testing.assert_allclose(updates[layer]['bias'], -2 * lr * mult, rtol=1e-6)


@pytest.mark.parametrize('field, value, message', [
    ('only', ('surgicl',), "names ['surgicl']"),
    ('tune.l2sp_alpha', -1.0, 'config.tune.l2sp_alpha must be 0 or more'),
    ('tune.l2sp_beta', -0.5, 'config.tune.l2sp_beta must be 0 or more'),
    ('tune.layer_decay', 1.5, 'config.tune.layer_decay must be in (0, 1]'),
    ('tune.layer_decay', 0.0, 'config.tune.layer_decay must be in (0, 1]'),
    ('tune.probe_fraction', 1.0, 'config.tune.probe_fraction must be in (0, 1)'),
    ('tune.probe_fraction', 0.0, 'config.tune.probe_fraction must be in (0, 1)'),
    ('tune.wise_alphas', (0.0, 1.5), 'config.tune.wise_alphas must be numbers in [0, 1]'),
])
def test_bad_tune_values_are_refused(field, value, message):
  config = _runlocal_config()
  *parents, last = field.split('.')
  node = config
  for name in parents:
    node = node[name]
  node[last] = value
  with pytest.raises(UserError, match=re.escape(message)):
    checks.validate(config, 4, 1)


def _runlocal_config():
  sys.path.insert(0, os.path.join(ROOT, 'configs'))
  try:
    import m_n_split  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  return m_n_split.get_config('dataset=fashion_mnist,runlocal')


def test_a_bad_tune_value_is_one_line_before_anything_is_written(tmp_path):
  workdir = tmp_path / 'w'
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}', ONLY,
               '--config.tune.wise_alphas=0,1.5')
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'config.tune.wise_alphas must be numbers in [0, 1]' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1 and not workdir.exists()


def test_sigkill_mid_run_then_rerun_ends_with_the_same_results(tune_grid, tmp_path):
  workdir = str(tmp_path / 'killed')
  copy_runs(tune_grid, workdir, 'm_n-baseA-s0')  # The tuned runs train at once.
  flags = (f'--config={RUNLOCAL}', f'--workdir={workdir}', ONLY, '--config.layers=(3,)',
           '--config.report=false')
  proc = subprocess.Popen(cli_command(*flags), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  # Killed in a run of the feature cache (surgical at n = 3 freezes conv1, conv2):
  # the cache is not checkpointed, and the resumed run computes it again.
  target = os.path.join(workdir, 'runs', 'm_n-A3B_surgical-s0', 'checkpoints', '8')
  deadline = time.time() + 300
  while not os.path.isdir(target):
    assert proc.poll() is None and time.time() < deadline, 'no progress to kill after'
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  result = cli(*flags)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming m_n-A3B_surgical-s0 from step' in result.stdout
  reference, rows = results(tune_grid), results(workdir)
  assert set(rows) == {'m_n-baseA-s0', 'm_n-A3B_surgical-s0', 'm_n-A7B_linear_probe-s0',
                       'm_n-A3B_lp_ft-s0', 'm_n-A3B_l2sp-s0', 'm_n-A3B_llrd-s0'}
  wise = [c for c in reference['m_n-A3B_l2sp-s0'] if c.startswith('wise_top1_')]
  for run_id, row in rows.items():
    assert [row[k] for k in (*NUMBERS, *wise)] == [reference[run_id][k]
                                                  for k in (*NUMBERS, *wise)], run_id


def test_a_flax_examples_resnet_runs_the_treatments_with_its_groups(resnet_grid):
  """BatchNorm statistics too: surgical n = 2 keeps every other group's
  params and batch_stats bitwise the base's. (The session's ResNet grid,
  which test_own_model reads too: the transfers ran in it beside these.)"""
  workdir = resnet_grid
  model = 'flax_resnet:ResNet18Narrow'
  rows = results(workdir)
  assert {r['treatment'] for r in rows.values()} == {'base', 'transfer', 'transfer_ft', *TUNE}
  last = len(flax_resnet.GROUPS)
  assert f'm_n-A{last}B_linear_probe-s0' in rows
  base = _variables(workdir, 'm_n-baseA-s0', 24, 6, model)
  run = _variables(workdir, 'm_n-A2B_surgical-s0', 24, 4, model)
  kept = [p for p in run if _group(p, flax_resnet.GROUPS) not in (0, 2)]
  assert any(p.startswith('batch_stats/') for p in kept)
  for path in kept:
    np.testing.assert_array_equal(run[path], base[path], err_msg=path)
  assert not np.array_equal(
      *(v[next(p for p in run if _group(p, flax_resnet.GROUPS) == 2)] for v in (run, base)))


def test_paper_treatments_compute_what_they_computed_before_plans(runlocal_grid, tmp_path):
  """The commit before run plans, from git, runs the same runlocal grid: every
  run's numbers agree within float rounding (top-1 within 1/128)."""
  old = tmp_path / 'before'
  old.mkdir()
  archive = subprocess.run(['git', '-C', ROOT, 'archive', BEFORE_PLANS, 'tfx_jax', 'configs'],
                           capture_output=True, check=False)
  assert archive.returncode == 0, (
      f'git archive {BEFORE_PLANS} failed (a shallow clone?): {archive.stderr[-500:]}')
  subprocess.run(['tar', '-x', '-C', str(old)], input=archive.stdout, check=True)
  workdir = tmp_path / 'w'
  done = subprocess.run([sys.executable, '-m', 'tfx_jax.main', f'--config={RUNLOCAL}',
                         f'--workdir={workdir}', '--config.analysis.run=False',
                         '--config.report=False'], cwd=old, capture_output=True, text=True,
                        check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  before, now = results(workdir), results(runlocal_grid[0])
  assert set(before) == set(now) and len(now) == 30
  for run_id, row in before.items():
    for key in ('top1', 'top5', 'best10_top1'):
      assert abs(float(row[key]) - float(now[run_id][key])) <= 1 / 128, (run_id, key)
  shutil.rmtree(workdir)


def test_own_model_pages_python_examples_run():
  """docs/own_model.md's examples, the tuning plans' included, as a user pastes them."""
  with open(os.path.join(ROOT, 'docs', 'own_model.md')) as f:
    blocks = re.findall(r'```python\n(.*?)```', f.read(), re.S)
  assert len(blocks) >= 2 and any('plan.tune_labels' in b for b in blocks)
  for block in blocks:
    exec(compile(block, 'docs/own_model.md', 'exec'), {})  # pylint: disable=exec-used


def test_the_feature_cache_computes_what_the_uncached_step_computes(tune_grid, tmp_path):
  """The tune grid ran with the cache (on by default); the same runs without
  it agree to float rounding. Which module each run cut at, and why a run had
  none, is one line each."""
  with open(f'{tune_grid}.stdout') as f:
    cached = f.read()
  # The linear probe and surgical n = 7 cut at fc6.
  assert cached.count("feature cache: the frozen layers' output at fc6") == 2
  assert "output at conv2" in cached  # surgical n = 3: conv1, conv2 frozen
  workdir = str(tmp_path / 'uncached')
  copy_runs(tune_grid, workdir, 'm_n-baseA-s0')
  result = cli(f'--config={RUNLOCAL}', f'--workdir={workdir}', '--config.layers=(3,)',
               '--config.only=linear_probe,surgical', '--config.feature_cache_mb=0',
               '--config.report=false')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'feature cache' not in result.stdout
  reference = results(tune_grid)
  for run_id in ('m_n-A7B_linear_probe-s0', 'm_n-A3B_surgical-s0'):
    for key in ('top1', 'best10_top1', 'wise_top1_0.5'):
      if key in reference[run_id] and reference[run_id][key]:
        assert abs(float(results(workdir)[run_id][key])
                   - float(reference[run_id][key])) <= 1 / 128, (run_id, key)


def _train_data(examples_per_class=0):
  """Fashion-MNIST's first four classes as the runner reads them (3,000 a class)."""
  return input_pipeline.train_iterator('fashion_mnist', (0, 1, 2, 3), batch_size=8, seed=0,
                                       examples_per_class=examples_per_class)


def test_the_feature_cache_says_why_it_is_off():
  """Augmented inputs, a budget too small, dropout in every frozen group: one
  line each, and the batches as they were."""
  mesh = steps.make_mesh()
  model = registry.create('small', 4)
  variables = registry.init_variables(model, jax.random.PRNGKey(0), (28, 28, 1))
  data = _train_data(examples_per_class=3000)
  notes = []
  kwargs = dict(batch_size=8, budget_mb=2048.0, augment=False, log=notes.append)
  norm = steps.normalizer((128.0,), (64.0,))
  out, cut = feature_cache.setup(model, GROUPS, variables, data, norm, mesh,
                                 **{**kwargs, 'augment': True})
  assert (out, cut, notes[-1]) == (data, None,
                                   '  feature cache off: augmentation changes the inputs.')
  out, cut = feature_cache.setup(model, GROUPS, variables, data, norm, mesh,
                                 **{**kwargs, 'budget_mb': 1.0}, eval_examples=4000)
  assert out is data and cut is None  # fc6's 256 floats for 12,000 + 4,000 examples:
  assert notes[-1] == ('  feature cache off: the output of fc6 for every example needs '
                       '16 MB, over --config.feature_cache_mb=1.')
  out, cut = feature_cache.setup(model, ('fc7',), variables, data, norm, mesh, **kwargs)
  assert out is data and cut is None and 'dropout or batch statistics' in notes[-1]
  out, cut = feature_cache.setup(model, GROUPS[:3], variables, data, norm, mesh,
                                 **kwargs)
  assert cut == ('conv3', (28, 28, 1), (7, 7, 96)) and out.features_shape == (7, 7, 96)
  assert data.get_state() == {'next_batch': 0}  # The batch it looked at is put back.


def test_the_feature_cache_loads_each_image_once_and_gives_the_prefix_output():
  """Keyed by example: over three epochs of 40 examples each image is loaded
  and its prefix computed once; every batch's features are the prefix's
  output for that batch's images, and the state resumes on the same batch."""
  mesh = steps.make_mesh()
  model = registry.create('small', 4)
  variables = registry.init_variables(model, jax.random.PRNGKey(0), (28, 28, 1))
  norm = steps.normalizer((128.0,), (64.0,))
  data, reference = _train_data(examples_per_class=10), _train_data(examples_per_class=10)
  loads = []
  load = data.load
  data.load = lambda plan: loads.append(len(plan['index'])) or load(plan)
  out, cut = feature_cache.setup(model, GROUPS, variables, data, norm, mesh, batch_size=8,
                                 budget_mb=64.0, augment=False, log=lambda _: None)
  assert cut[0] == 'fc6'
  prefix = feature_cache.make_prefix(model, 'fc6', norm)
  for _ in range(15):  # 3 epochs of 5 batches.
    batch, want = next(out), next(reference)
    np.testing.assert_array_equal(batch['label'], want['label'])
    expected = prefix(variables, steps.global_batch({'image': want['image']}, mesh)['image'],
                      jax.random.PRNGKey(3))
    np.testing.assert_allclose(batch['features'], expected, rtol=1e-5, atol=1e-5)
  assert out.computed == 40 and sum(loads) == 8 + 40  # choose_cut's batch, then each once.
  state = out.get_state()
  following = next(out)
  out.set_state(state)
  np.testing.assert_array_equal(next(out)['features'], following['features'])
