"""Name -> class registries for the pluggable parts (modalities, objectives, evaluators).

Adding one is one file plus a config entry: `xefm_jax/<package>/<name>.py` decorates its
class with `@REGISTRY.register("<name>")`, and `REGISTRY.get("<name>")` imports that file on
first use, so nothing has to list the files.

    OBJECTIVES = registry.Registry("objective", "xefm_jax.objectives")
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

T = TypeVar("T", bound=type)


class Registry(Generic[T]):
  """Classes of one kind, registered by name, found in `package`.<name> on demand."""

  def __init__(self, kind: str, package: str):
    self.kind = kind
    self.package = package
    self._classes: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Class decorator: make the class available under the config name `name`."""
    def wrap(cls: T) -> T:
      if self._classes.get(name, cls) is not cls:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._classes[name] = cls
      return cls
    return wrap

  def get(self, name: str) -> T:
    """The class registered as `name`, importing `package.name` on demand."""
    path = f"{self.package.replace('.', '/')}/{name}.py"
    if name not in self._classes:
      try:
        importlib.import_module(f"{self.package}.{name}")
      except ModuleNotFoundError as e:
        if e.name != f"{self.package}.{name}":
          raise  # the file exists; something it imports does not
        raise KeyError(f"no {self.kind} {name!r}: expected {path}") from e
    if name not in self._classes:
      raise KeyError(f"{path} does not @register({name!r}) a {self.kind}")
    return self._classes[name]

  def names(self) -> tuple[str, ...]:
    """Registered (imported) names, sorted."""
    return tuple(sorted(self._classes))
