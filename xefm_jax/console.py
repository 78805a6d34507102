"""What a person sees on a job's console: progress bars and one line per event.

Libraries log their routine work at INFO: Orbax every checkpoint read and write (hundreds
of lines per restore), Grain every data read, JAX its platform probing ("Unable to
initialize backend 'tpu'"). The launchers keep those libraries' warnings and errors only,
so the job's own lines stand out:

    app.run(main)  ->  in main: console.quiet_libraries()
"""

from __future__ import annotations

import logging as pylogging

from absl import logging

QUIET = ("orbax", "grain", "jax")  # packages whose INFO lines are dropped
# Warnings about what a job does on purpose: evaluation opens the trainer's checkpoints
# read-only (eval/checkpoints.py) and Orbax warns about it at every manager it makes.
EXPECTED = ("Given directory is read only",)


class QuietLibraries(pylogging.Filter):
  """Drops records below WARNING from the QUIET packages' files, and their EXPECTED
  warnings."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if not any(f"/{lib}/" in record.pathname for lib in QUIET):
      return True
    if record.levelno < pylogging.WARNING:
      return False
    return record.levelno > pylogging.WARNING or not any(
        str(record.msg).startswith(e) for e in EXPECTED)


def quiet_libraries() -> None:
  """Installs QuietLibraries on absl's handler (call inside app.run's main)."""
  handler = logging.get_absl_handler()
  if not any(isinstance(f, QuietLibraries) for f in handler.filters):
    handler.addFilter(QuietLibraries())
