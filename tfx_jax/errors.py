"""Bad user input (configs, data, checkpoints, flags), and how CLIs report it:
one line `error: ...` on stderr, exit code 2, no traceback (unless --verbose)."""

from __future__ import annotations

import errno
import logging as pylogging
import os
import re
import signal
import sys
import traceback
import warnings
from collections.abc import Callable

from absl import app, flags, logging
from ml_collections import config_flags

EXIT_CODE = 2  # As absl and argparse exit on bad flags.
INTERRUPTED = 130  # 128 + SIGINT: how shells report a Ctrl-C.

flags.DEFINE_bool('verbose', False, 'Show library logs and warnings, and Python tracebacks '
                  'for input errors (the exit code stays the same).')


class UserError(ValueError):
  """Input the user can fix. The CLI prints its message, without a traceback.

  The message names the problem and how to fix it, in one or two sentences.
  """


class Preempted(Exception):
  """Raised after the checkpoint of a preempted (SIGTERM) or interrupted (SIGINT)
  run has been written (training/preemption.py); the CLIs exit 128 + signum."""

  def __init__(self, run_id: str, step: int, signum: int = signal.SIGTERM):
    what = 'Interrupted (Ctrl-C)' if signum == signal.SIGINT else 'Preempted (SIGTERM)'
    super().__init__(f'{what} in run {run_id} at step {step}; its checkpoint is '
                     f'saved. Run the same command again to resume.')
    self.run_id, self.step, self.exit_code = run_id, step, 128 + signum


def explain(error: BaseException) -> str:
  """One line for a config or flag failure, from the root of its cause chain."""
  chain = [error]
  while chain[-1].__cause__ or chain[-1].__context__:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  user = [e for e in chain if isinstance(e, UserError) and 'Traceback' not in str(e)]
  if user:
    return str(user[-1])
  text = str(chain[-1])
  missing = re.search(r"No such file or directory: '([^']+)'", text)
  if 'Failed loading config file' in text and missing:
    return (f'Config file {missing.group(1)!r} does not exist; pass an existing '
            f'file, e.g. --config=configs/default.py.')
  if "has no attribute 'get_config'" in text:
    given = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--config=')]
    name = f"{given[-1].split(':')[0]!r} " if given else ''
    return (f'Config file {name}has no get_config(); a config file defines '
            f'get_config(arg=None), as configs/m_n_split.py does.')
  # ml_collections on an unknown --config.KEY: 'KEY', and 'Did you mean "K"' if close.
  attribute = next((str(e) for e in chain if isinstance(e, AttributeError)), '')
  unknown = re.match(r"""(?:'\\'|"')(\w+)(?:\\'|')""", attribute)  # A KeyError's repr.
  if unknown:
    close = re.search(r'Did you mean "(\w+)"', attribute)
    hint = f' Did you mean {close.group(1)!r}?' if close else ''
    return (f'Unknown config key {unknown.group(1)!r}.{hint} The fields are '
            f'listed in tfx_jax/config.py.')
  first = str(chain[0]).splitlines()[0]
  if first.startswith('flag --config.'):
    return f'Bad config value: {first[5:]}'
  return first


def define_config_and_workdir(workdir_help: str) -> None:
  """The --config (a config file, `file.py:key=value,flag`) and --workdir flags
  of a CLI that runs a grid."""
  config_flags.DEFINE_config_file('config', None, 'Config file, optionally '
                                  'file.py:key=value,flag', lock_config=True)
  flags.DEFINE_string('workdir', None, workdir_help)
  caller = sys._getframe(1).f_globals['__name__']  # pylint: disable=protected-access
  caller = sys.argv[0] if caller == '__main__' else caller  # As absl names a main module.
  for name in ('config', 'workdir'):  # Listed by the CLI's --help as its own.
    flags.FLAGS.register_key_flag_for_module(caller, flags.FLAGS[name])


def loaded_config(flag_values, name: str = 'config'):
  """The config of a `config_flags` flag, once loaded; a config file that fails
  to load (it raises on first use) is a UserError of one line."""
  try:
    config = flag_values[name].value
    config.get('dataset')
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(explain(e)) from e
  return config


# Faults of the machine that a user fixes as they fix bad input: one line.
_WRITE_FAULTS = {errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is used up',
                 errno.EROFS: 'the filesystem is read-only', errno.EACCES: 'permission denied',
                 errno.EPERM: 'permission denied'}


def write_fault(error: BaseException, where: str, flag: str) -> str | None:
  """One line for a full disk, a read-only filesystem or a denied write (a
  denied access counts only at or under the directory `where`: elsewhere it
  may be a read), naming the path and what to do: free space, or another
  `flag`. None for any other error."""
  if not isinstance(error, OSError) or error.errno not in _WRITE_FAULTS:
    return None
  path = os.fsdecode(error.filename) if error.filename else where
  inside = os.path.abspath(path) + os.sep
  if (error.errno in (errno.EACCES, errno.EPERM)
      and not inside.startswith(os.path.abspath(where) + os.sep)):
    return None
  fix = (f'free space there, or pass another {flag}' if error.errno in (errno.ENOSPC, errno.EDQUOT)
         else f'pass a {flag} you can write to')
  return f'Cannot write {path}: {_WRITE_FAULTS[error.errno]}; {fix}.'


# A tensorstore (Orbax checkpoint) write that failed for the machine: it raises
# ValueError('RESOURCE_EXHAUSTED: ... Failed writing: "PATH": ... [os_error_code='28']').
_STORE_FAULT = re.compile(r"(?:Failed|Error) writing.*\[os_error_code='(\d+)'\]", re.S)
_STORE_PATH = re.compile(r'"(/[^"]+)"')
# A fault anywhere is a write only for these (a denied access may be a read).
_ANYWHERE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def machine_fault(error: BaseException, flag: str) -> str | None:
  """`write_fault`'s line for a full disk, read-only filesystem or denied
  write anywhere in `error`'s cause chain, tensorstore's (a checkpoint's)
  included; None for any other error."""
  while error is not None:
    if isinstance(error, OSError) and error.errno in _ANYWHERE:
      return write_fault(error, os.sep, flag)
    found = _STORE_FAULT.search(str(error))
    if found and int(found.group(1)) in _WRITE_FAULTS:
      path = (_STORE_PATH.findall(str(error)) or [''])[-1]
      if '.orbax-checkpoint-tmp' in path:  # Name the checkpoints, not Orbax's temporaries.
        path = os.path.dirname(path.split('.orbax-checkpoint-tmp')[0])
      code = int(found.group(1))
      return write_fault(OSError(code, os.strerror(code), path or None), os.sep, flag)
    error = error.__cause__ or error.__context__
  return None


class _NoFaultLogs(pylogging.Filter):
  """Drops libraries' error logs of a machine fault (Orbax logs a full disk's
  traceback from each of its threads): the CLI says it in one line."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not (_STORE_FAULT.search(record.getMessage())
                or (error is not None and machine_fault(error, '-')))


def _closed_loop_callback(value: BaseException | None, tb) -> bool:
  """Whether an error is the callback of a write abandoned after one failed:
  tensorstore completes the others (a full disk's) on an asyncio loop Orbax
  has closed, and each raises 'Event loop is closed' in call_soon_threadsafe;
  the failure itself is reported."""
  return (isinstance(value, RuntimeError) and tb is not None
          and tb.tb_frame.f_code.co_name == 'call_soon_threadsafe')


def _without_closed_loop_callbacks() -> None:
  """sys.excepthook and sys.unraisablehook (pybind11 reports a callback's
  error there, as a bare traceback), less those callbacks."""
  excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

  def quiet_excepthook(kind, value, tb):
    if not _closed_loop_callback(value, tb):
      excepthook(kind, value, tb)

  def quiet_unraisablehook(unraisable):
    if not _closed_loop_callback(unraisable.exc_value, unraisable.exc_traceback):
      unraisablehook(unraisable)

  sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook


HELP_FLAGS = ('--help', '-help', '-h', '-?', '--helpshort', '--helpfull', '--helpxml')


def _verbose() -> bool:
  return flags.FLAGS.is_parsed() and flags.FLAGS.verbose


def warn(message: str) -> None:
  """A warning of ours, on stderr whatever the verbosity: `warning: ...`."""
  print(f'warning: {message}', file=sys.stderr, flush=True)


def _fail(message: str, verbose: bool = False) -> None:
  """One line on stderr and exit 2; with --verbose, the traceback before it."""
  if verbose:
    traceback.print_exc()
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_CODE)


def last_wins(argv: list[str]) -> list[str]:
  """argv with only the last `--config.FIELD=` of each field: ml_collections
  would add a repeated tuple field's values up (`--config.layers=2
  --config.layers=3` ran both); like every other flag, the last one wins."""
  field = lambda arg: (re.match(r'--?(config\.[\w.]+)=', arg) or [None, None])[1]
  end = argv.index('--') if '--' in argv else len(argv)
  last = {field(a): i for i, a in enumerate(argv[:end])}
  return [a for i, a in enumerate(argv) if i >= end or not field(a) or last[field(a)] == i]


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(last_wins(argv))
  except SystemExit as e:  # absl printed the usage for --help, and exits 1.
    if any(a.split('=')[0] in HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise e
  except Exception as e:  # pylint: disable=broad-except
    _fail(explain(e), '--verbose' in argv)
    raise  # Unreachable: _fail exits.


def run(main: Callable[[list[str]], None], fault_flag: str = '', on_fault: str = '') -> None:
  """absl's app.run(main), reporting bad flags and UserErrors the house way:
  exit 2 with one line, --verbose or not (it adds the traceback). With
  fault_flag, a machine fault (`machine_fault`) anywhere in main is one line
  too, naming the path, fault_flag as the other place to write, and
  `on_fault` (what a rerun does)."""
  def quiet_main(argv):
    if not flags.FLAGS.verbose:  # Libraries' logs and warnings (Orbax, JAX) stay off stderr.
      logging.set_verbosity(logging.ERROR)
      logging.get_absl_handler().addFilter(_NoFaultLogs())
      _without_closed_loop_callbacks()
      warnings.simplefilter('ignore')
    main(argv)

  try:
    app.run(quiet_main, flags_parser=_parse_flags)
  except UserError as e:
    _fail(str(e), _verbose())
  except Exception as e:  # pylint: disable=broad-except
    fault = fault_flag and machine_fault(e, fault_flag)
    if not fault:
      raise
    _fail(f'{fault[:-1]}{"; " + on_fault if on_fault else ""}.', _verbose())
