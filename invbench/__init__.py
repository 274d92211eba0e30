"""invbench: a comparative benchmark of inverse-problem solvers with diffusion priors.

One installed name, four subpackages (each kept in its own top-level folder of the repository and
mapped here by ``pyproject.toml``; ``docs/design.md`` explains the layout):

- :mod:`invbench.operators` — forward models ``y = A(x) + noise`` (folder ``operators/``);
- :mod:`invbench.priors` — denoisers ``D(x, sigma)`` (folder ``priors/``);
- :mod:`invbench.solvers` — solvers behind one ``solve`` call (folder ``solvers/``);
- :mod:`invbench.bench` — the harness: experiment files, runner, store, reports (folder ``bench/``).

Importing ``invbench`` itself loads none of them.
"""

__version__ = "0.1.0"
