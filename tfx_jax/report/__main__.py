"""`python -m tfx_jax.report --workdir=W`: the report of W's results.csv."""

import os
from collections.abc import Sequence

from absl import flags

from tfx_jax import errors
from tfx_jax.report import writer

_WORKDIR = flags.DEFINE_string('workdir', None, 'The run directory holding results.csv.',
                               required=True)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise errors.UserError(f'Unexpected arguments {list(argv[1:])}; give --workdir=W.')
  result = writer.write_report(_WORKDIR.value)
  words = {True: 'holds', False: 'does not hold', None: 'not testable'}
  verdicts = ', '.join(f'{f["id"]} {words[f["holds"]]}' for f in result['findings'])
  print(f'Report in {os.path.join(_WORKDIR.value, writer.REPORT_DIR)}: findings {verdicts}.')


if __name__ == '__main__':
  errors.run(main)
