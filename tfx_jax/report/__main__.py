"""`python -m tfx_jax.report --workdir=W [--analyse]`: the report of W's
results.csv; with --analyse, also what is transferred, from W's checkpoints
(report/analysis.md)."""

import os
import sys
import traceback
from collections.abc import Sequence

from absl import flags

from tfx_jax import errors
from tfx_jax.report import analysis, writer

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory holding results.csv.',
                               required=True)
_ANALYSE = flags.DEFINE_bool('analyse', False, 'Also analyse what is transferred (CKA, '
                             'probes, scores against the grid) from the checkpoints.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise errors.UserError(f'Unexpected arguments {list(argv[1:])}; give --workdir=W.')
  # Analysed first: a workdir it refuses (no checkpoints), or where it fails,
  # is left as it was.
  computed = _analysed(analysis.compute, _WORKDIR.value) if _ANALYSE.value else None
  result = writer.write_report(_WORKDIR.value)
  words = {True: 'holds', False: 'does not hold', None: 'not testable'}
  verdicts = (', '.join(f'{f["id"]} {words[f["holds"]]}' for f in result['findings'])
              if any(f['holds'] is not None for f in result['findings']) else 'none testable')
  shifted = ''.join(f'; shift criterion at {k or "all"} images per class: {v}'
                    for k, v in result.get('shift', {}).items())
  print(f'Report in {os.path.join(_WORKDIR.value, writer.REPORT_DIR)}: findings {verdicts}'
        f'{shifted}.')
  if _ANALYSE.value:
    print(f'Analysis: {_analysed(analysis.run, _WORKDIR.value, computed=computed)}')


def _analysed(fn, workdir: str, **kwargs):
  """fn(workdir, ...); a failure that is no UserError is one line on stderr
  and exit 1 (with --verbose, its traceback first)."""
  try:
    return fn(workdir, **kwargs)
  except errors.UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if flags.FLAGS.verbose:
      traceback.print_exc()
    print(f'error: {analysis.failure(e, workdir)}', file=sys.stderr, flush=True)
    sys.exit(1)


if __name__ == '__main__':
  errors.run(main)
