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

# A source checkout keeps the subpackages next to this folder (``operators/``, ``priors/``,
# ``solvers/``, ``bench/``). Resolve them in *this* checkout: otherwise a second clone or worktree
# that runs its tests with another checkout's editable install would import that checkout's code
# (the editable finder maps ``invbench.*`` to the folders it was installed from). In an installed
# wheel these folders are not siblings and nothing changes.
import os as _os

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
_SEP = _os.sep


class _ThisCheckout:
    """Finds ``invbench.*`` submodules in this checkout's folders only (first on ``sys.meta_path``):
    a module this checkout lacks but another checkout has (the one the editable install points
    at) is missing here, not taken from there; one that exists nowhere is left to the other
    finders (``None``), as the finder protocol expects."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if not fullname.startswith(__name__ + ".") or path is None:
            return None
        from importlib.machinery import PathFinder

        prefix = _ROOT.rstrip(_SEP) + _SEP
        own = [p for p in path if p == _ROOT or p.startswith(prefix)]
        spec = PathFinder.find_spec(fullname, own)
        if spec is None and _found_elsewhere(fullname, path, target):
            raise ModuleNotFoundError(f"No module named {fullname!r} in the checkout {_ROOT}", name=fullname)
        return spec


def _found_elsewhere(fullname, path, target) -> bool:
    """Whether another finder (the editable install's mapping, another path) would find it."""
    import sys

    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if finder is _ThisCheckout or find is None:
            continue
        try:
            if find(fullname, path, target) is not None:
                return True
        except ImportError:
            continue
    return False


if all(_os.path.isfile(_os.path.join(_ROOT, _d, "__init__.py")) for _d in ("operators", "priors", "solvers", "bench")):
    import sys as _sys

    __path__[:] = [_ROOT]
    _sys.meta_path.insert(0, _ThisCheckout)
    del _sys
del _os

