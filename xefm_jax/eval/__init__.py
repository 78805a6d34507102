"""Evaluation: embed held-out windows with a frozen checkpoint and run the suite."""
