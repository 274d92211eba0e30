"""Assets below every layer: the table of downloadable weight files and the weights folder's
manifest (:mod:`invbench.assets.weights`). Priors (ADM checkpoints) and the harness (metrics,
``invbench fetch``, ``invbench check``) both read it; it imports neither.
"""
