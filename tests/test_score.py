"""launch/score.py and the answer checks: validity reasons, field scores on known answers,
the reference predictors, and every problem of a predictions file reported by line."""

import json
import types

import numpy as np
import pytest

from data_pipelines.export import common
from data_pipelines.export import json_tasks
from train_runs import launch_module
from xefm_jax.data import labels as labels_lib
from xefm_jax.data import text as text_lib
from xefm_jax.eval import answer_scores
from xefm_jax.eval import answers
from xefm_jax.objectives import captioning

OPTIONS = answer_scores.Options(frozenset({"pour", "stir"}), frozenset({"Make tea"}),
                                frozenset({"cup", "kettle"}))
GOOD = {"action": "pour", "subtask": "Make tea", "objects": ["cup"], "contact": "yes",
        "transition": "no", "next_action": "stir",
        "evidence_window": {"start_frame": 0, "end_frame": 19}}


def _with(**kw):
  return {**GOOD, **kw}


@pytest.mark.parametrize("prediction, reason", [
    (answers.answer_text(GOOD), None),
    ("```json\n" + json.dumps(GOOD) + "\n```", None),  # a fence is tolerated
    ("Sure! " + json.dumps(GOOD) + " Hope this helps.", None),
    ("pour the kettle", "unparseable"),
    ("[1, 2]", "unparseable"),
    (None, "unparseable"),
    ({k: v for k, v in GOOD.items() if k != "contact"}, "wrong_type"),
    (_with(extra=1), "wrong_type"),
    (_with(action=3), "wrong_type"),
    (_with(objects="cup"), "wrong_type"),
    (_with(objects=["cup"] * 2), "wrong_type"),
    (_with(objects=[f"o{i}" for i in range(9)]), "wrong_type"),
    (_with(contact=True), "wrong_type"),
    (_with(transition="maybe"), "wrong_type"),
    (_with(evidence_window={"start_frame": 5, "end_frame": 4}), "wrong_type"),
    (_with(evidence_window=[0, 19]), "wrong_type"),
    (_with(action="Pour"), "unknown_label"),
    (_with(subtask="make tea"), "unknown_label"),
    (_with(objects=["spoon"]), "unknown_label"),
    (_with(action="unknown", next_action="unknown", subtask="unknown", contact="unknown"),
     None),
])
def test_check_reasons(prediction, reason):
  answer, why = answer_scores.check(prediction, OPTIONS)
  assert why == reason
  assert (answer is None) == (reason is not None)


def test_scores_on_known_answers():
  truths = [_with(action="pour", objects=["cup"], contact="yes"),
            _with(action="stir", objects=["cup", "kettle"], contact="no"),
            _with(action="unknown", objects=[], contact="yes")]
  # right, wrong action and half the objects, invalid
  preds = [GOOD, _with(action="pour", objects=["kettle"], contact="no"), None]
  s = answer_scores.score(truths, preds, [None, None, "unparseable"])
  assert s["json_validity_rate"] == pytest.approx(2 / 3)
  assert s["invalid"] == {"missing": 0, "unparseable": 1, "wrong_type": 0, "unknown_label": 0}
  action = s["fields"]["action"]  # 2 records with a known action: pour->pour, stir->pour
  assert action["records"] == 2 and action["accuracy"] == 0.5
  assert action["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
  assert s["fields"]["contact"]["accuracy"] == pytest.approx(2 / 3)  # invalid counts wrong
  # objects: tp cup, kettle = 2; fp none; fn cup (rec 2) = 1 -> 2*2 / (4 + 1)
  assert s["fields"]["objects"]["micro_f1"] == pytest.approx(0.8)


SCORE_CLI = launch_module("score")


def _main(capsys, *argv):
  """launch/score.py's main() in this process: its exit status and output."""
  rc = SCORE_CLI.main([str(a) for a in argv])
  out = capsys.readouterr()
  return types.SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)


def _score(capsys, export, out, *args):
  proc = _main(capsys, "--tasks", export, "--out", out, *args)
  return proc, (json.loads((out / "metrics.json").read_text()) if proc.returncode < 2
                else None)


def test_references_and_perfect_answers(json_task_export, tmp_path, capsys):
  rows = common.read_jsonl(json_task_export / json_tasks.DATASET)
  truth = tmp_path / "truth.jsonl"
  common.write_jsonl(truth, [{"id": r["id"], "prediction": r["answer_json"]} for r in rows])
  proc, result = _score(capsys, json_task_export, tmp_path / "s", "--predictions", f"truth={truth}",
                        "--write-references", str(tmp_path / "refs"))
  assert proc.returncode == 0, proc.stderr
  for split, s in result["predictors"]["truth"]["splits"].items():
    assert s["json_validity_rate"] == 1.0, split
    for field, v in s["fields"].items():
      assert all(v[m] == 1.0 for m in ("macro_f1", "accuracy", "micro_f1", "f1")
                 if v.get(m) is not None), (split, field, v)
  assert set(result["predictors"]) == {"truth", "majority (reference)",
                                       "previous_window (reference)"}
  assert "| truth | 1.000 | 1.000 |" in (tmp_path / "s" / "report.md").read_text()
  # the reference files score exactly as the built-in references
  proc, again = _score(capsys, json_task_export, tmp_path / "s2", "--predictions",
                       f"majority={tmp_path / 'refs' / 'majority.jsonl'}", "--predictions",
                       f"previous={tmp_path / 'refs' / 'previous_window.jsonl'}")
  assert proc.returncode == 0, proc.stderr
  p = again["predictors"]
  assert p["majority"]["splits"] == p["majority (reference)"]["splits"]
  assert p["previous"]["splits"] == p["previous_window (reference)"]["splits"]
  majority = [json.loads(x["prediction"]) for x in
              common.read_jsonl(tmp_path / "refs" / "majority.jsonl")]
  assert len({answers.answer_text({k: v for k, v in a.items() if k != "evidence_window"})
              for a in majority}) == 1  # one answer for every record
  # the previous window's answer is its predecessor's truth
  previous = {x["id"]: json.loads(x["prediction"]) for x in
              common.read_jsonl(tmp_path / "refs" / "previous_window.jsonl")}
  by_id = {r["id"]: r for r in rows}
  r = next(r for r in rows if r["center_window"]["start_frame"] == 40)
  before = by_id[r["id"].replace(":qa:2", ":qa:1")]
  assert previous[r["id"]]["action"] == before["answer_json"]["action"]
  assert previous[r["id"]]["evidence_window"] == r["answer_json"]["evidence_window"]


def test_every_problem_is_reported_by_line(json_task_export, tmp_path, capsys):
  rows = common.read_jsonl(json_task_export / json_tasks.DATASET)
  test = [r for r in rows if r["split"] == "test"]
  train = next(r for r in rows if r["split"] == "train")
  lines = [json.dumps({"id": r["id"], "prediction": r["answer_json"]}) for r in test[2:]]
  lines += [json.dumps({"id": test[2]["id"], "prediction": "{}"}),  # duplicate
            json.dumps({"id": "nope:qa:0", "prediction": "{}"}),  # not a record
            json.dumps({"id": train["id"], "prediction": "{}"}),  # another split
            json.dumps({"id": test[1]["id"], "split": "val",  # says the wrong split
                        "prediction": test[1]["answer_json"]}),
            "not json", json.dumps(["a list"])]
  path = tmp_path / "preds.jsonl"
  path.write_text("\n".join(lines) + "\n")
  args = ["--tasks", json_task_export, "--predictions", f"model={path}", "--split", "test",
          "--out", tmp_path / "out", "--no-references"]
  out = _main(capsys, *args)
  assert out.returncode == 1, out.stderr
  n = len(test) - 2
  expect = [f"{path}:{n + 1}: duplicate id {test[2]['id']!r} (first on line 1)",
            f"{path}:{n + 2}: id 'nope:qa:0' is not a record of the export",
            f"{path}:{n + 3}: id {train['id']!r} is a train record, the scored split(s) are "
            "test",
            f"{path}:{n + 4}: id {test[1]['id']!r} says split 'val', the record is in 'test'",
            f"{path}:{n + 5}: not JSON", f"{path}:{n + 6}: expected an object",
            f"{path}: id {test[0]['id']!r} (test) has no prediction; scored as invalid"]
  for e in expect:
    assert e in out.stderr, e
  metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
  s = metrics["predictors"]["model"]["splits"]["test"]
  assert s["invalid"]["missing"] == 1 and s["records"] == len(test)
  assert s["json_validity_rate"] == pytest.approx((len(test) - 1) / len(test))
  assert "duplicate id" in (tmp_path / "out" / "report.md").read_text()
  bad = _main(capsys, "--tasks", json_task_export, "--predictions",
              tmp_path / "missing.jsonl")
  assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
  assert "missing.jsonl: not found" in bad.stderr


def test_decoder_answers_render_into_the_schema():
  labels = labels_lib.Labels(("home",), ("Make tea",), ("pour", "stir"), ("cup", "kettle"),
                          text_lib.Vocab(["<pad>", "<unk>", "<bos>", "<eos>", "the"]))
  layout = captioning.Layout.from_labels(labels)
  seq = [2, layout.marker("action"), layout.action_base + 1, layout.marker("subtask"),
         layout.none, layout.marker("objects"), layout.object_base + 1,
         layout.marker("contact"), layout.true, layout.marker("transition"), layout.false,
         layout.marker("next_action"), layout.action_base, layout.marker("caption"), 4, 3]
  window = {"start_frame": 20, "end_frame": 39}
  text = answers.decoder_answer(np.array(seq), labels, window)
  assert json.loads(text) == {"action": "stir", "subtask": "unknown", "objects": ["kettle"],
                              "contact": "yes", "transition": "no", "next_action": "pour",
                              "evidence_window": window}
  options = answer_scores.Options(frozenset(labels.actions), frozenset(labels.subtasks),
                                  frozenset(labels.objects))
  assert answer_scores.check(text, options)[1] is None
  broken = answers.decoder_answer(np.array(seq[:5] + [3]), labels, window)
  assert answer_scores.check(broken, options) == (None, "unparseable")
