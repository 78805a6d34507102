"""Evaluators: one file per kind of task, registered by name (configs/eval.py names them).

    ev = evaluators.get("classify")
    fitted = ev.fit(task, data, "model")                 # train -> fit, val -> select
    scores = ev.score(task, data, "model", fitted)       # test, once
    scores = ev.score(task, data, "model", fitted, swap={"full": "full-video"})  # robustness
    scores = ev.score(task, data, "model", fitted, rows=mask)                    # a subset

Adding a kind of task is one file here with a class decorated `@register("<kind>")`; the
shared pieces (the splits, input features, the probe grid) are in `base.py`.
"""

from xefm_jax.eval.evaluators.base import Data, Evaluator, get, register  # noqa: F401
