"""sparsebudget: per-request sparse-attention budgets and the block-sparse CPU kernel.

The compiled bindings live in `sparsebudget._core` (pybind11 + numpy); everything public there is
re-exported here, so `import sparsebudget as sb; sb.attention(...)` is the API. `sparsebudget.torch`
(block-sparse attention for torch tensors, the trace recorder) imports torch only when imported
itself, so this package works without torch.
"""
from . import _core
from ._core import *  # noqa: F401,F403  (the bindings are the package's API)

__version__ = _core.__version__
__doc__ = _core.__doc__ if _core.__doc__ else __doc__
__all__ = [n for n in dir(_core) if not n.startswith("_")]

# Show the package, not the private extension, in reprs and help().
for _n in __all__:
    _obj = getattr(_core, _n)
    try:
        if getattr(_obj, "__module__", None) == _core.__name__:
            _obj.__module__ = __name__
    except (AttributeError, TypeError):
        pass
del _n, _obj
