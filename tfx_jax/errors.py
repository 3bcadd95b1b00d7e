"""The one exception type for bad user input (configs, data, checkpoints, flags)."""


class UserError(ValueError):
  """Input the user can fix. The CLI prints its message, without a traceback.

  The message names the problem and how to fix it, in one or two sentences.
  """
