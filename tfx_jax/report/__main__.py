"""`python -m tfx_jax.report --workdir=W [--analyse]`: the report of W's
results.csv; with --analyse, also what is transferred, from W's checkpoints
(report/analysis.md)."""

import os
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
  # Analysed first: a workdir it refuses (no checkpoints) is left as it was.
  computed = analysis.compute(_WORKDIR.value) if _ANALYSE.value else None
  result = writer.write_report(_WORKDIR.value)
  words = {True: 'holds', False: 'does not hold', None: 'not testable'}
  verdicts = ', '.join(f'{f["id"]} {words[f["holds"]]}' for f in result['findings'])
  print(f'Report in {os.path.join(_WORKDIR.value, writer.REPORT_DIR)}: findings {verdicts}.')
  if _ANALYSE.value:
    print(f'Analysis: {analysis.run(_WORKDIR.value, computed=computed)}')


if __name__ == '__main__':
  errors.run(main)
