"""One file per modality: a registered tokenizer that turns its fields of a window into
tokens; `base.ModalityEncoder` makes them a TokenGroup (see base.py)."""
