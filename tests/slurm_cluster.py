"""A one-node SLURM cluster on this machine, for the tests of tfx_jax.slurm.

munged, slurmctld and slurmd from Debian's `munge` and `slurm-wlm`, installed
with apt-get where missing (`make test-deps` installs them first). Each daemon
runs in the foreground as a child of this process, with its own munge key,
slurm.conf, ports, state and logs in one temporary directory; `stop()` ends
each by its process id. The node has this machine's CPUs and memory (`slurmd
-C`), SelectType=select/cons_tres. Clients find the cluster by SLURM_CONF in
`env`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

PACKAGES = {'munged': 'munge', 'slurmctld': 'slurm-wlm', 'slurmd': 'slurm-wlm',
            'sbatch': 'slurm-wlm'}
NODE = socket.gethostname().split('.')[0]  # jax.distributed connects to it by name.
SBIN = ('/usr/sbin', '/usr/bin')


def _which(name: str) -> str | None:
  return shutil.which(name) or next(
      (os.path.join(d, name) for d in SBIN if os.path.exists(os.path.join(d, name))), None)


def install() -> None:
  """apt-get install the packages whose programs are missing (root or sudo)."""
  missing = sorted({p for name, p in PACKAGES.items() if not _which(name)})
  if not missing:
    return
  sudo = [] if os.geteuid() == 0 else ['sudo']
  env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
  subprocess.run([*sudo, 'apt-get', 'update', '-qq'], check=True, env=env)
  subprocess.run([*sudo, 'apt-get', 'install', '-y', '-qq', *missing], check=True, env=env)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _machine() -> dict[str, str]:
  """This machine as slurmd sees it: CPUs, RealMemory, sockets, cores..."""
  line = subprocess.run([_which('slurmd'), '-C'], capture_output=True, text=True,
                        check=True).stdout.splitlines()[0]
  fields = dict(item.split('=', 1) for item in line.split())
  fields.pop('NodeName')
  return fields


class Cluster:
  """munged + slurmctld + slurmd, state in `root`; `env` points clients at it."""

  def __init__(self, root: str):
    self.root = root
    self.conf = os.path.join(root, 'slurm.conf')
    self.socket = os.path.join(root, 'munge', 'munge.socket')
    self.procs: dict[str, subprocess.Popen] = {}
    self.env = {**os.environ, 'SLURM_CONF': self.conf}
    self.cpus = 0

  def _write_conf(self) -> None:
    for sub in ('munge', 'state', 'spool', 'log'):  # munged: its socket's directory
      os.makedirs(os.path.join(self.root, sub), mode=0o755, exist_ok=True)  # is 0755.
    key = os.path.join(self.root, 'munge', 'munge.key')
    with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'wb') as f:
      f.write(os.urandom(1024))
    machine = _machine()
    self.cpus = int(machine['CPUs'])
    memory = int(machine['RealMemory'])
    node = ' '.join(f'{k}={v}' for k, v in machine.items())
    r = self.root
    conf = f"""\
ClusterName=tfxtest
SlurmctldHost={NODE}(127.0.0.1)
MailProg=/bin/true
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket},cred_expire=10
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
LaunchParameters=use_interactive_step
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU={memory // self.cpus}
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
ReturnToService=2
JobRequeue=1
MinJobAge=3600
KillWait=30
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=30
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
PlugStackConfig={r}/plugstack.conf
NodeName={NODE} NodeAddr=127.0.0.1 {node} State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""
    with open(self.conf, 'w') as f:
      f.write(conf)
    with open(os.path.join(r, 'plugstack.conf'), 'w') as f:
      f.write('')

  def _start(self, name: str, *args: str) -> None:
    log = open(os.path.join(self.root, 'log', f'{name}.out'), 'w')  # pylint: disable=consider-using-with
    self.procs[name] = subprocess.Popen([_which(name), *args], stdout=log,
                                        stderr=subprocess.STDOUT, env=self.env,
                                        start_new_session=True)

  def start(self, timeout: float = 60) -> Cluster:
    install()
    self._write_conf()
    m = os.path.join(self.root, 'munge')
    self._start('munged', '--foreground', '--force', f'--socket={self.socket}',
                f'--key-file={m}/munge.key', f'--pid-file={m}/munged.pid',
                f'--log-file={m}/munged.log', f'--seed-file={m}/munged.seed')
    self._wait(lambda: os.path.exists(self.socket), timeout, 'munged')
    self._start('slurmctld', '-D', '-i', '-f', self.conf)
    self._start('slurmd', '-D', '-N', NODE, '-f', self.conf)
    self._wait(self._node_idle, timeout, 'the node to be idle')
    return self

  def _node_idle(self) -> bool:
    out = self.run('sinfo', '-h', '-N', '-o', '%T', check=False).stdout.strip()
    return out == 'idle'

  def _wait(self, ready, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not ready():
      dead = [n for n, p in self.procs.items() if p.poll() is not None]
      if dead or time.time() > deadline:
        self.stop()
        raise RuntimeError(f'SLURM test cluster: no {what} '
                           f'({"died: " + ", ".join(dead) if dead else "timed out"}); '
                           f'logs in {self.root}/log: {self.logs()}')
      time.sleep(0.2)

  def logs(self) -> str:
    out = []
    for name in sorted(os.listdir(os.path.join(self.root, 'log'))):
      with open(os.path.join(self.root, 'log', name), errors='replace') as f:
        out.append(f'--- {name}\n{f.read()[-2000:]}')
    return '\n'.join(out)

  def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, env=self.env,
                          check=check, timeout=60)

  def job(self, job_id: str) -> dict[str, str]:
    """`scontrol show job` of one job (an array task: JOB_TASK) as a dict."""
    out = self.run('scontrol', '-o', 'show', 'job', job_id).stdout
    return dict(item.split('=', 1) for item in out.split() if '=' in item)

  def stop(self) -> None:
    """Ends every daemon this cluster started, by its process id (slurmd
    first, munged last)."""
    for name in ('slurmd', 'slurmctld', 'munged'):
      proc = self.procs.pop(name, None)
      if proc is None or proc.poll() is not None:
        continue
      proc.terminate()
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
