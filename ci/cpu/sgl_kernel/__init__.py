"""CPU stand-in for the CUDA-only ``sgl_kernel`` package (tests and benchmark only).

SGLang imports ``sgl_kernel`` (and submodules such as ``sgl_kernel.kvcacheio``) at module
level in code that the CPU tests reach, but never calls it on the paths they exercise.
Every attribute of this package and of any submodule is a function that raises, so an
accidental call fails loudly instead of computing garbage.
"""

import importlib.abc
import importlib.machinery
import sys
import types


def _raising(qualname: str):
    def _unavailable(*args, **kwargs):
        raise RuntimeError(
            f"{qualname} was called, but this is the CPU test shim (ci/cpu/sgl_kernel): "
            "the real kernel needs CUDA."
        )

    _unavailable.__name__ = qualname.rsplit(".", 1)[-1]
    return _unavailable


class _ShimModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _raising(f"{self.__name__}.{name}")


# Submodules SGLang imports inside ``try: ... except ImportError`` with a CPU fallback of
# its own: leave them missing so that fallback runs.
_ABSENT = {"sgl_kernel.scalar_type"}


class _ShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + ".") and fullname not in _ABSENT:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _ShimModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _ShimFinder())
sys.modules[__name__].__class__ = _ShimModule
