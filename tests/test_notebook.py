"""notebooks/probe_representations.ipynb runs headless, top to bottom, on a tiny run."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "probe_representations.ipynb"


@pytest.mark.xdist_group("reference_run")  # see test_train.REFERENCE_RUN
def test_probe_notebook_executes(reference, train_env, tmp_path, monkeypatch):
  # the kernel inherits this environment: the run, a place for its figures, one device (see
  # conftest.train_env) and the session's compilation cache
  monkeypatch.setenv("XEFM_RUN", str(reference))
  monkeypatch.setenv("XEFM_NOTEBOOK_OUT", str(tmp_path))
  monkeypatch.setenv("XEFM_NOTEBOOK_WINDOWS", "120")
  for key in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
    monkeypatch.setenv(key, train_env[key])
  monkeypatch.setenv("XLA_FLAGS", train_env["XLA_FLAGS"])
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(ROOT)}}).execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "macro_f1" in text and "mrr" in text and "ade@2s" in text
  assert any("image/png" in o.get("data", {}) for o in outputs)  # the 2-D projection
  assert (tmp_path / "forecast_trajectories.png").is_file()
