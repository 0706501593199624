"""Turning result objects into what people and scripts read. Renderers decide nothing."""
