"""User-facing input errors.

Every loader raises `InputError` for bad input; the command-line entry points turn it into one line on
stderr and exit code 2 (see `experiments/run.py`). The message names the file, the row or column, and what
was expected, so no traceback is needed.
"""


class InputError(ValueError):
  """Bad user input: a missing or malformed file, a wrong column, an empty split."""

  def __init__(self, message: str, path: str | None = None, line: int | None = None):
    where = ""
    if path is not None:
      where = f"{path}"
      if line is not None:
        where += f", line {line}"
      where += ": "
    super().__init__(where + message)
    self.path = path
    self.line = line
