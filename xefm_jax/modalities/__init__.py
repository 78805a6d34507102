"""One file per modality: a registered tokenizer that turns its fields of a window into
tokens, and the targets those tokens are reconstructed to. Imports point one way: these files
import the model side (`xefm_jax/model/encoders.py`: the Tokenizer base, the registry, and
`ModalityEncoder`, which makes the tokens a TokenGroup); the model never imports them (the
registry finds `xefm_jax.modalities.<name>` by name when a config asks for it)."""
