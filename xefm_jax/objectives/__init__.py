"""Pretraining objectives: one file per objective (its head, loss and metrics)."""
