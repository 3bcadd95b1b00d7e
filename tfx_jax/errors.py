"""Bad user input (configs, data, checkpoints, flags), and how CLIs report it:
one line `error: ...` on stderr, exit code 2, no traceback (unless --verbose)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

from absl import app, flags

EXIT_CODE = 2  # As absl and argparse exit on bad flags.


class UserError(ValueError):
  """Input the user can fix. The CLI prints its message, without a traceback.

  The message names the problem and how to fix it, in one or two sentences.
  """


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


def _verbose() -> bool:
  return 'verbose' in flags.FLAGS and flags.FLAGS['verbose'].value


def _fail(message: str) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_CODE)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    if '--verbose' in argv:
      raise
    _fail(explain(e))
    raise  # Unreachable: _fail exits.


def run(main: Callable[[list[str]], None]) -> None:
  """absl's app.run(main), reporting bad flags and UserErrors the house way."""
  try:
    app.run(main, flags_parser=_parse_flags)
  except UserError as e:
    if _verbose():
      raise
    _fail(str(e))
