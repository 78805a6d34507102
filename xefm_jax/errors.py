"""How a launcher or a data pipeline reports bad input: one line a person can act on.

    xefm: <file or key>: <what is wrong>; <what to do>

`Error` is the base of the project's own error types (bad shards, episodes, media, splits,
configs, checkpoints): raised with such a message, it is printed as that line (one line per
problem when there are several) and the process exits 1; a usage error exits 2. `--verbose`
or XEFM_TRACEBACK=1 prints the traceback as well. Any other exception is a bug and keeps
its traceback.

    if __name__ == "__main__":            # an argparse CLI; its parser calls
      errors.cli(main)                    # errors.add_verbose_argument(parser)

    if __name__ == "__main__":            # an absl launcher
      errors.run(main)
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
from collections.abc import Iterable
from typing import Any, Callable, NoReturn, Optional, Sequence

PREFIX = "xefm: "
TRACEBACK_ENV = "XEFM_TRACEBACK"
VERBOSE_FLAG = "--verbose"
EXIT_ERROR, EXIT_USAGE = 1, 2


class Error(Exception):
  """Bad input a person can fix. The message is `<file or key>: <what is wrong>; <what to
  do>`, one line per problem."""


class UsageError(Error):
  """A command line that cannot be run (exit 2)."""


def closest(name: str, choices: Iterable[str]) -> Optional[str]:
  """The choice `name` was most likely meant to be, or None."""
  match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
  return match[0] if match else None


def lines(error: BaseException) -> list[str]:
  """The one-line reports of `error` (one per line of its message)."""
  text = str(error).strip() or type(error).__name__
  return [PREFIX + line.strip() for line in text.splitlines() if line.strip()]


def verbose(argv: Sequence[str] = ()) -> bool:
  """Whether to print tracebacks: --verbose among `argv`, or XEFM_TRACEBACK set (not 0)."""
  return VERBOSE_FLAG in argv or os.environ.get(TRACEBACK_ENV, "0") not in ("", "0")


def report(error: BaseException, show_traceback: bool = False) -> int:
  """Prints `error` to stderr as the one-line report; returns its exit status."""
  sys.stdout.flush()
  if show_traceback:
    traceback.print_exception(error)
  print("\n".join(lines(error)), file=sys.stderr, flush=True)
  return EXIT_USAGE if isinstance(error, UsageError) else EXIT_ERROR


def add_verbose_argument(parser: Any) -> None:
  """The --verbose flag of an argparse CLI (read by `cli` before parsing)."""
  parser.add_argument(VERBOSE_FLAG, action="store_true",
                      help=f"print the traceback of an error (also {TRACEBACK_ENV}=1)")


def cli(main: Callable[[list[str]], Optional[int]],
        argv: Optional[Sequence[str]] = None) -> NoReturn:
  """Runs an argparse CLI's `main(argv)` and exits with its status; the project's errors
  become one line (exit 1; `UsageError` 2)."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    status = main(argv)
  except Error as e:
    status = report(e, verbose(argv))
  sys.exit(status or 0)


# ------------------------------------------------------------------------------------ absl


def run(main: Callable[[list[str]], Optional[int]]) -> NoReturn:
  """`absl.app.run(main)` with the project's errors as one line: a config override naming
  no key, a value a config key cannot take, a config file that does not load (exit 1); an
  unknown flag or a missing required one (exit 2); an `Error` raised by `main` (exit 1)."""
  from absl import app, flags

  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, f"Print the traceback of an error (also "
                      f"{TRACEBACK_ENV}=1).")

  def parse(argv: list[str]) -> list[str]:
    try:
      rest = flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001: every parse failure is a bad command line
      sys.exit(report(_flag_error(e, argv), verbose(argv)))
    for name in flags.FLAGS:
      flag = flags.FLAGS[name]
      if getattr(flag, "value", None) is not None and type(flag.value).__name__ == (
          "_ErrorConfig"):  # ml_collections defers a config file that did not load
        try:
          flag.value.keys()
        except OSError as e:
          cause = _last_line(str(e.__cause__ or e))
          sys.exit(report(Error(f"--{name}={flag.serialize().split('=', 1)[-1]}: the config "
                                f"file does not load ({cause}); give the path of a config "
                                "file"), verbose(argv)))
    return rest

  def wrapped(argv: list[str]) -> Optional[int]:
    try:
      return main(argv)
    except app.UsageError as e:
      return report(UsageError(str(e)), verbose(sys.argv))
    except Error as e:
      return report(e, verbose(sys.argv))

  app.run(wrapped, flags_parser=parse)


def _flag_error(error: Exception, argv: Sequence[str]) -> Error:
  """An absl / ml_collections flag-parsing failure as the project's error."""
  from absl import flags

  overrides = [a.lstrip("-").split("=", 1)[0] for a in argv[1:]
               if a.startswith("--") and "." in a.split("=", 1)[0]]
  if isinstance(error, (AttributeError, KeyError)) and overrides:
    unknown = _unknown_override(argv, overrides)
    if unknown:
      return Error(unknown)
  first = str(error).splitlines()[0] if str(error).strip() else ""
  if isinstance(error, flags.IllegalFlagValueError) and "Error whilst parsing config" in first:
    return Error(f"{first.split(': Error whilst', 1)[0].removeprefix('flag ')}: the config "
                 f"file raised {_last_line(str(error))}; fix the file or its variant")
  if isinstance(error, flags.IllegalFlagValueError) and any(
      f"--{o}=" in str(error) for o in overrides):
    return Error(f"{str(error).splitlines()[0]}; give a value of the key's type")
  if isinstance(error, flags.Error):
    return UsageError(f"{str(error).splitlines()[0]}; see --help")
  # the config file itself did not load (a missing file, an unknown variant, ...)
  config = next((a for a in argv[1:] if a.startswith("--config=")), "--config")
  return Error(f"{config}: {type(error).__name__}: {error}".replace("\n", " "))


def _last_line(text: str) -> str:
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return lines[-1] if lines else text


def _unknown_override(argv: Sequence[str], overrides: Sequence[str]) -> Optional[str]:
  """`--config.a.b=...` naming no key of the config: its full path and the closest key."""
  config = _load_config(argv)
  if config is None:
    return None
  for override in overrides:
    flag, *path = override.split(".")
    node, where = config, flag
    for key in path:
      try:
        keys = list(node.keys())
      except AttributeError:
        break  # a leaf: ml_collections reports a bad value, not a key
      if key not in keys:
        near = closest(key, keys)
        hint = (f"did you mean {where}.{near}?" if near else
                f"its keys are {', '.join(sorted(keys))}")
        return f"--{override}: {where} has no key '{key}'; {hint}"
      node, where = node[key], f"{where}.{key}"
  return None


def _load_config(argv: Sequence[str]) -> Any:
  """The config of `--config=path[:arg]` (the `get_config(arg)` convention), or None."""
  import importlib.util

  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[list(argv).index("--config") + 1]
  if not spec:
    return None
  path, _, arg = spec.partition(":")
  try:
    module_spec = importlib.util.spec_from_file_location("_xefm_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)
  except Exception:  # noqa: BLE001: the caller falls back to the library's message
    return None
