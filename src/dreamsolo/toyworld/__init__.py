"""The toy world: the pool, the `toy` model and the evaluators the default study is read with, all trained
here offline (tools/pretrain_toy.py) and validated on held-out data (tools/validate_toy.py, docs/TOY.md).
Nothing in the pipeline's stages imports this package: the stages load the shipped weights."""
