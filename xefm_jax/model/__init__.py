"""Layers with logical axes, the transformer stack, the fusion transformer and XEFM."""
