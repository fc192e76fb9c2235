"""R2Gen (Chen et al., EMNLP 2020, github.com/cuhksz-nlp/R2Gen) as a boxmed-eval model plugin.

A memory-driven Transformer: ResNet-101 patch features -> 3-layer Transformer encoder ->
decoder whose layer norms are conditioned on a relational memory. The module names follow the
public code so its released checkpoints load strictly. Registered on the entry-point group
``boxmed_eval.models`` as ``r2gen`` (see README.md in this folder: the worked example of
adding a baseline).
"""
