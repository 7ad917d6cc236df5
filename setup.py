"""Install-time build of the compiled kernels; everything else about the package is in pyproject.toml.

moesim/sim/fast/plan.c (with the C files it includes) is one C99 translation unit with no Python
headers, loaded with ctypes. `pip install` / `pip wheel` build it into the package as
moesim/sim/fast/_kernels<extension suffix> with the same compiler and flags as the first-use build
(moesim/sim/fast/build.py, `build_installed`), so a wheel carries it. Without a C compiler the
install still succeeds, says so, and moesim runs its pure-Python reference path.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
BUILD_PY = HERE / "moesim" / "sim" / "fast" / "build.py"


def _kernel_build():
    """moesim/sim/fast/build.py loaded by path (the package's dependencies may not be installed yet)."""
    spec = importlib.util.spec_from_file_location("_moesim_kernel_build", BUILD_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildKernels(build_ext):
    """build_ext for a plain C shared library: build.py's compiler and flags, not Python's."""

    def build_extension(self, ext: Extension) -> None:
        target = Path(self.get_ext_fullpath(ext.name))
        reason = _kernel_build().build_installed(target)
        if reason is not None:
            print(f"moesim: compiled kernels not built ({reason}); moesim will use its slower reference path "
                  "or build them on first use", file=sys.stderr)


setup(
    ext_modules=[Extension("moesim.sim.fast._kernels", sources=["moesim/sim/fast/plan.c"], optional=True)],
    cmdclass={"build_ext": BuildKernels},
)
