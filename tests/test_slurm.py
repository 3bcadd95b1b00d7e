"""python -m tfx_jax.slurm: its --dry_run scripts, and the runlocal grid through
it on a real one-node SLURM cluster (tests/slurm_cluster.py), one per test
session, with a task sent SIGTERM part-way."""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tfx_jax.errors import UserError
from tfx_jax.slurm import scripts, submit

import slurm_cluster
from conftest import NUMBERS, ROOT, RUNLOCAL, results

SUBMIT = (sys.executable, '-m', 'tfx_jax.slurm')
# Each task is a main job on one CPU of the node; no analysis at the end.
GRID = (f'--config={RUNLOCAL}', '--config.analysis.run=False')
# The cluster's grid: n = 1, 2 of it (10 runs), 4 runs a task: one task of bases,
# two of transplants.
SUBMITTED = (*GRID, '--config.layers=(1,2)')


def launcher(*args, env=None, **kwargs):
  return subprocess.run([*SUBMIT, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                        **kwargs)


def sections(text: str) -> dict[str, str]:
  """--dry_run's output: the text under each '==> NAME <==' header."""
  parts = re.split(r'^==> (.*) <==\n', text, flags=re.M)
  return {name: body.split('\n\n')[0] + '\n' for name, body in zip(parts[1::2], parts[2::2])}


def _when(stamp: str) -> float:
  return time.mktime(time.strptime(stamp, '%Y-%m-%dT%H:%M:%S'))


def _wait_for(predicate, timeout: float, what: str):
  deadline = time.time() + timeout
  while not (found := predicate()):
    assert time.time() < deadline, f'timed out waiting for {what}'
    time.sleep(0.3)
  return found


def _sigterm_mid_run(cluster, logs: str) -> dict:
  """Once task 0 of the first transplant array has trained 8 steps of its first
  run, `scancel --signal=TERM --batch` to it; returns what was signalled."""
  jobs_file = os.path.join(logs, 'jobs.json')
  _wait_for(lambda: os.path.exists(jobs_file), 120, 'jobs.json')
  with open(jobs_file) as f:
    jobs = {j['key']: j for j in json.load(f)['jobs']}
  key = next(k for k in jobs if k.startswith('transplants'))
  log = jobs[key]['log'].replace('%A', jobs[key]['id']).replace('%a', '0')
  first = jobs[key]['tasks'][0][0]
  # While the bases train, the queue holds the rest back for their dependencies.
  squeue = lambda: cluster.run('squeue', '-h', '-r', '-o', '%i %j %T %r').stdout
  queue = _wait_for(lambda: 'bases RUNNING' in (q := squeue()) and q, 120,
                    'the bases to run')
  _wait_for(lambda: os.path.exists(log) and f'{first}] step 8/' in open(log).read(), 300,
            f'{first} to reach step 8')
  job_id = cluster.job(f'{jobs[key]["id"]}_0')['JobId']
  # scancel retries while the job it signalled is being requeued ("can not be
  # altered now"), and would signal its restart too: stopped once it requeued.
  scancel = subprocess.Popen(['scancel', '--signal=TERM', '--batch', job_id], env=cluster.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for(lambda: 'requeueing job' in open(log).read(), 120, 'the task to requeue')
  scancel.kill()
  scancel.wait()
  return {'key': key, 'task': f'{jobs[key]["id"]}_0', 'run': first, 'log': log,
          'queue_while_bases_ran': queue}


@pytest.fixture(scope='session')
def slurm_grid(tmp_path_factory, worker_id):
  """The runlocal grid at n = 1, 2 submitted to a one-node cluster with --wait (4
  runs a task), task 0 of the first transplant array sent SIGTERM at step 8, a second
  submission tried while the first is queued, then a grid whose tasks fail.
  Everything the tests look at is recorded before the cluster stops, so that
  pytest-xdist's workers share one cluster and one grid (as runlocal_grid)."""
  root = tmp_path_factory.getbasetemp()
  root = root if worker_id == 'master' else root.parent
  record = root / 'slurm_grid.json'
  with open(root / 'slurm_grid.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not record.exists():
      record.write_text(json.dumps(_run_slurm_grid(str(root / 'slurm'))))
  return json.loads(record.read_text())


def _run_slurm_grid(root: str) -> dict:
  cluster = slurm_cluster.Cluster(os.path.join(root, 'cluster')).start()
  try:
    workdir = os.path.join(root, 'grid')
    logs = os.path.join(workdir, 'slurm')
    args = [*SUBMIT, *SUBMITTED, f'--workdir={workdir}', '--runs_per_task=4', '--wait',
            '--poll_seconds=1', '--', '--cpus-per-task=1', '--time=30']
    proc = subprocess.Popen(args, cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    signalled = _sigterm_mid_run(cluster, logs)
    again = launcher(*SUBMITTED, f'--workdir={workdir}', '--', '--cpus-per-task=1',
                     env=cluster.env)
    bad_time = launcher(*GRID, f'--workdir={root}/dry', '--dry_run', '--', '--time=notatime',
                        env=cluster.env)
    out, err = proc.communicate(timeout=600)
    with open(os.path.join(logs, 'jobs.json')) as f:
      jobs = json.load(f)['jobs']
    shown = {j['key']: [cluster.job(f'{j["id"]}_{k}') for k in range(len(j['tasks']))]
             if j['tasks'] else [cluster.job(j['id'])] for j in jobs}
    failing = os.path.join(root, 'failing')
    failed = launcher(*GRID, '--config.layers=1', f'--workdir={failing}', '--wait',
                      '--poll_seconds=1', '--setup=exit 3', '--', '--cpus-per-task=1',
                      env=cluster.env, timeout=300)
  finally:
    cluster.stop()
  # sbatch installed, slurm.conf in place, no controller answering.
  down = [launcher(*GRID, f'--workdir={root}/down', *dry, '--', '--partition=gpu',
                   env=cluster.env, timeout=300) for dry in ((), ('--dry_run',))]
  return {'bad_time': [bad_time.returncode, bad_time.stdout, bad_time.stderr],
          'down': [[d.returncode, d.stdout, d.stderr] for d in down],
          'down_workdir': f'{root}/down', 'workdir': workdir, 'logs': logs,
          'code': proc.returncode, 'stdout': out,
          'stderr': err, 'jobs': jobs, 'shown': shown, 'signalled': signalled,
          'again': [again.returncode, again.stderr], 'failing': failing,
          'failed': [failed.returncode, failed.stdout, failed.stderr]}


def test_the_runlocal_grid_on_slurm_ends_with_the_results_of_a_local_run(
    slurm_grid, runlocal_grid):
  assert slurm_grid['code'] == 0, slurm_grid['stderr'][-3000:]
  assert 'Done: results in' in slurm_grid['stdout']
  local, on_slurm = results(runlocal_grid[0]), results(slurm_grid['workdir'])
  assert len(on_slurm) == 10 and set(on_slurm) < set(local)
  for run_id, row in on_slurm.items():
    assert {k: row[k] for k in NUMBERS} == {k: local[run_id][k] for k in NUMBERS}, run_id
  # The report job wrote the report, after every task.
  assert os.path.exists(os.path.join(slurm_grid['workdir'], 'report', 'findings.md'))
  assert [j['key'] for j in slurm_grid['jobs']] == ['bases', 'transplants-0', 'report']
  assert all(s['JobState'] == 'COMPLETED' for shown in slurm_grid['shown'].values()
             for s in shown)


def test_a_task_sent_sigterm_requeues_itself_and_resumes_losing_nothing(
    slurm_grid, runlocal_grid):
  signalled = slurm_grid['signalled']
  task = slurm_grid['shown'][signalled['key']][0]
  assert task['Restarts'] == '1'
  with open(signalled['log']) as f:
    log = f.read()
  run = signalled['run']
  assert f'Preempted (SIGTERM) in run {run} at step 8' in log
  assert 'requeueing job' in log and 'restart 1)' in log
  assert f'resuming {run} from step 8' in log
  # The resumed run's every train and eval record equals the local run's, once.
  path = lambda workdir: os.path.join(workdir, 'runs', run, 'metrics.jsonl')
  numbers = lambda workdir: [
      {k: v for k, v in json.loads(line).items() if k in ('step', 'kind', 'loss', 'top1')}
      for line in open(path(workdir))]
  assert numbers(slurm_grid['workdir']) == numbers(runlocal_grid[0])
  assert len(numbers(slurm_grid['workdir'])) == 6  # train and eval at steps 8, 16, 24


def test_transplants_start_only_after_their_bases_by_dependencies(slurm_grid):
  shown = slurm_grid['shown']
  bases_end = _when(shown['bases'][0]['EndTime'])
  for task in shown['transplants-0']:
    # Queued before the bases ended, held by SLURM until they had, not by polling
    # (a requeue submits a task anew).
    assert _when(task['SubmitTime']) < bases_end or task['Restarts'] != '0'
    assert _when(task['EligibleTime']) >= bases_end
    assert _when(task['StartTime']) >= bases_end
  assert [t['Restarts'] for t in shown['transplants-0']] == ['1', '0']
  queue = slurm_grid['signalled']['queue_while_bases_ran']
  assert re.search(r'transplants-0 PENDING Dependency', queue), queue
  assert re.search(r'report PENDING Dependency', queue), queue
  report = shown['report'][0]
  assert _when(report['StartTime']) >= max(_when(t['EndTime']) for t in shown['transplants-0'])


def test_a_second_submission_is_refused_while_the_first_is_queued(slurm_grid):
  code, err = slurm_grid['again']
  assert code == 2, err
  assert 'Jobs of an earlier submission are still queued or running' in err
  assert 'scancel' in err and 'Traceback' not in err


def test_wait_names_each_failed_task_and_its_log(slurm_grid):
  code, out, err = slurm_grid['failed']
  assert code == 1, err
  assert 'task 0 of bases' in err and 'unfinished: see ' in err
  log = re.search(r'task 0 of bases .* see (\S+)', err).group(1)
  assert os.path.exists(log)
  # The transplants and the report waited for the failed bases: SLURM cancelled them.
  assert re.search(r'report \(job \d+\) ended CANCELLED', err), err
  assert not os.path.exists(os.path.join(slurm_grid['failing'], 'results.csv'))


def test_a_controller_that_does_not_answer_is_named_not_the_options(slurm_grid):
  (code, out, err), (dry_code, dry_out, dry_err) = slurm_grid['down']
  assert code == 2 and len(err.strip().splitlines()) == 1, err[-3000:]
  assert "SLURM's controller does not answer (Slurmctld(primary) at" in err and 'DOWN' in err
  assert 'refuses the options' not in err and 'were not checked' in err
  assert not os.path.exists(slurm_grid['down_workdir'])
  assert dry_code == 0, dry_err[-3000:]
  assert "The sbatch options were not checked: SLURM's controller does not answer" in dry_out


def test_without_sbatch_the_options_are_not_checked_and_submitting_says_why(
    tmp_path, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))  # No sbatch, no scontrol.
  assert submit.dry_check(['--partition=gpu']) == (
      'The sbatch options were not checked: sbatch is not on PATH.')
  with pytest.raises(UserError, match='sbatch is not on PATH: run python -m tfx_jax.slurm'):
    submit.check_sbatch(['--partition=gpu'])


def test_dry_run_refuses_options_sbatch_refuses_in_one_line(slurm_grid):
  code, out, err = slurm_grid['bad_time']
  assert code == 2 and len(err.strip().splitlines()) == 1, err[-3000:]
  assert 'sbatch refuses the options after -- (--time=notatime)' in err, err
  assert 'time' in err.split(':', 2)[-1] and not out  # sbatch's reason; no scripts printed.


def test_a_rerun_submits_only_what_is_unfinished(slurm_grid, tmp_path):
  workdir = str(tmp_path / 'grid')
  shutil.copytree(slurm_grid['workdir'], workdir)
  shutil.rmtree(os.path.join(workdir, 'slurm'))
  done = launcher(*SUBMITTED, f'--workdir={workdir}', '--dry_run')
  assert done.returncode == 0, done.stderr
  assert done.stdout.startswith('Nothing to submit: all 10 runs')
  os.remove(os.path.join(workdir, 'runs', 'm_n-A2B+-s0', 'result.json'))
  os.remove(os.path.join(workdir, 'runs', 'm_n-B1B-s0', 'result.json'))
  dry = launcher(*SUBMITTED, f'--workdir={workdir}', '--runs_per_task=7', '--dry_run')
  assert dry.returncode == 0, dry.stderr
  scripts = sections(dry.stdout)
  assert sorted(os.path.basename(k) for k in scripts if k.endswith('.sbatch')) == [
      'report.sbatch', 'transplants.sbatch']  # The bases are trained: no dependency.
  assert "'m_n-B1B-s0 m_n-A2B+-s0'" in scripts[os.path.join(workdir, 'slurm',
                                                            'transplants.sbatch')]
  assert 'transplants=$(sbatch --parsable --cpus' not in dry.stdout  # No options given.
  assert re.search(r'^transplants=\$\(sbatch --parsable /', dry.stdout, re.M)
  assert not os.path.exists(os.path.join(workdir, 'slurm'))  # --dry_run writes nothing.


def test_dry_run_scripts_pass_shellcheck_and_chain_their_dependencies(tmp_path):
  workdir = str(tmp_path / 'w')
  dry = launcher(*GRID, f'--workdir={workdir}', '--dry_run', '--setup=module load cuda',
                 '--', '--nodes=2', '--gres=gpu:4', '-t', '1:00:00')
  assert dry.returncode == 0, dry.stderr
  found = sections(dry.stdout)
  script = lambda key: found[os.path.join(workdir, 'slurm', f'{key}.sbatch')]
  for name, text in found.items():
    check = subprocess.run(['shellcheck', '-s', 'bash', '-'], input=text,
                           capture_output=True, text=True)
    assert check.returncode == 0, f'{name}:\n{check.stdout}'
  runs = lambda key: [t.strip("'").split() for t in re.findall(
      r"^  ('[^']*')$", script(key), re.M)]
  assert runs('bases') == [['m_n-baseB-s0'], ['m_n-baseA-s0']]
  # Each transplant array holds the runs of one base's task, and waits for that task.
  assert {r[0][:5] for r in runs('transplants-0')} == {'m_n-B'}
  assert {r[0][:5] for r in runs('transplants-1')} == {'m_n-A'}
  assert sum(map(len, runs('transplants-0') + runs('transplants-1'))) == 28
  commands = found['the sbatch commands (--dry_run: nothing submitted)']
  line = lambda key: next(c for c in commands.splitlines() if c.startswith(f'{key}='))
  assert 'dependency' not in line('bases')
  assert '"--dependency=afterok:${bases%%;*}_0"' in line('transplants_0')
  assert '"--dependency=afterok:${bases%%;*}_1"' in line('transplants_1')
  assert ('"--dependency=afterok:${bases%%;*}:${transplants_0%%;*}:${transplants_1%%;*}"'
          in line('report'))
  assert '--kill-on-invalid-dep=yes' in line('report')
  # Two nodes a task: srun and jax.distributed; the report job is one process.
  assert '--nodes=2 --gres=gpu:4 -t 1:00:00' in line('bases')
  assert '--nodes' not in line('report') and '--gres=gpu:4 -t 1:00:00' in line('report')
  assert 'srun --kill-on-bad-exit=1 ' in script('bases') and '--multihost' in script('bases')
  assert 'srun' not in script('report')
  for key in ('bases', 'transplants-0', 'report'):
    assert '#SBATCH --signal=B:TERM@300' in script(key) and '#SBATCH --requeue' in script(key)
    assert 'module load cuda' in script(key)
  assert not os.path.exists(workdir)


@pytest.mark.parametrize('options, message', [
    (['--array=0-3'], 'sbatch option --array is set by tfx_jax.slurm itself'),
    (['-p', 'gpu', '-d', 'afterok:1'], 'sbatch option -d is set by tfx_jax.slurm itself'),
    (['--nodes=two'], 'sbatch option --nodes needs a number'),
    (['gpu'], "'gpu' after -- is not an sbatch option"),
])
def test_sbatch_options_the_launcher_sets_or_cannot_read_are_refused(options, message):
  with pytest.raises(UserError, match=re.escape(message)):
    scripts.check_options(options)


def test_processes_a_task_has_follow_the_node_and_task_counts():
  assert scripts.check_options(['--gres=gpu:8', '-p', 'gpu', '-t', '1:00:00']) == 1
  assert scripts.check_options(['-N', '4', '--ntasks-per-node=2']) == 8
  assert scripts.check_options(['--nodes=4', '-n3']) == 3
  assert scripts.one_process(['-N', '4', '--gres=gpu:8', '--ntasks=4']) == ['--gres=gpu:8']


@pytest.mark.parametrize('args, message', [
    (('--', '--array=0-3'), 'sbatch option --array is set by tfx_jax.slurm itself'),
    (('--runs_per_task=0',), '--runs_per_task must be 1 or more'),
    (('--local_shards=2', '--', '--ntasks=2'), '--local_shards runs one node'),
    (('--config.sweep.runs=m_n-baseA-s0',), 'chooses each task\'s runs itself'),
])
def test_bad_launcher_input_is_one_line_and_writes_nothing(tmp_path, args, message):
  workdir = tmp_path / 'w'
  done = launcher(*GRID, f'--workdir={workdir}', *args)
  assert done.returncode == 2, done.stderr
  assert done.stderr.strip().splitlines() == [f'error: {done.stderr.strip()[7:]}']
  assert message in done.stderr
  assert not workdir.exists()
