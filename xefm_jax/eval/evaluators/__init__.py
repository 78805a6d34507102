"""Evaluators: one file per kind of task, registered by name (configs/eval.py names them).

    ev = evaluators.get("classify")
    fitted = ev.fit(task, data, "model")                 # train -> fit, val -> select
    scores = ev.score(task, data, "model", fitted)       # test, once
    scores = ev.score(task, data, "model", fitted, swap={"full": "full-video"})  # robustness
    scores = ev.score(task, data, "model", fitted, rows=mask)                    # a subset
    pred = ev.predict(task, data, "model", fitted)       # test predictions, once
    scores = ev.metrics(task, data, pred, weights)       # any weighting of them (bootstrap)

Adding a kind of task is one file here with a class decorated `@register("<kind>")`
(fit, predict, metrics; base.py's docstring says what each must do); the shared pieces
(the splits, input features, the probe grid, label coverage) are in `base.py`.
"""

from xefm_jax.eval.evaluators.base import Data, Evaluator, get, register  # noqa: F401
