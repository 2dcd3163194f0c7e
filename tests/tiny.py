"""Shared test data: the [model] table of a sweep on the tiny random model on CPU."""

TINY_MODEL_TOML = """[model]
model = "random:tiny"
codec = "random:tiny"
pca = "random:tiny"
dtype = "float32"
device = "cpu"
"""
