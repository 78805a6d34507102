"""Import hygiene: the training graph (model, modalities, objectives) never imports the raw
episode readers (h5py, PyAV), and the model side never imports a modality file."""

import json
import subprocess
import sys

from train_runs import ROOT

PACKAGES = ("xefm_jax.model", "xefm_jax.modalities", "xefm_jax.objectives")


def _fresh(code: str) -> dict:
  """Runs `code` in a fresh interpreter (nothing imported yet); its last stdout line, JSON."""
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=False, env={"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
                                         "PATH": "/usr/bin:/bin"})
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_training_graph_imports_neither_h5py_nor_av():
  got = _fresh(f"""
import importlib, json, pkgutil, sys
names = []
for package in {PACKAGES!r}:
  pkg = importlib.import_module(package)
  for m in pkgutil.iter_modules(pkg.__path__):
    names.append(f"{{package}}.{{m.name}}")
    importlib.import_module(names[-1])
print(json.dumps({{"modules": names,
                  "heavy": sorted(m for m in ("h5py", "av") if m in sys.modules)}}))
""")
  assert "xefm_jax.objectives.captioning" in got["modules"]
  assert "xefm_jax.modalities.imu" in got["modules"]
  assert got["heavy"] == [], f"{got['heavy']} imported by {PACKAGES}"


def test_model_imports_no_modality():
  """modalities -> model, never back: building the model's modules loads no tokenizer file
  (the registry imports one by name when a config asks for it)."""
  got = _fresh("""
import importlib, json, pkgutil, sys
import xefm_jax.model as pkg
for m in pkgutil.iter_modules(pkg.__path__):
  importlib.import_module(f"xefm_jax.model.{m.name}")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("xefm_jax.modalities"))))
""")
  assert got == []
