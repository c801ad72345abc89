"""Build minitensor: the C++ kernels (minitensor._C) and the Cython autograd engine.

Both extensions are optional. Without a C++ compiler, or with one that has no OpenMP,
the install still succeeds: without OpenMP the kernels run single-threaded, and without
a compiler minitensor runs on its numpy backend. Either way the build prints one warning.
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import setup
from setuptools.command.build_ext import build_ext

try:
    from pybind11.setup_helpers import ParallelCompile, Pybind11Extension
except ImportError:  # pybind11 is a declared build requirement; this only helps odd manual builds
    Pybind11Extension = None
else:
    ParallelCompile(default=0).install()  # compile the kernel files in parallel (0: one job per CPU)

ROOT = os.path.dirname(os.path.abspath(__file__))


def compiles(compiler_cmd, source, flags=()):
    """Compile and link a tiny program: the only reliable test of what a compiler can do."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.cpp")
        with open(path, "w") as f:
            f.write(source)
        try:
            result = subprocess.run([compiler_cmd, *flags, path, "-o", os.path.join(tmp, "probe")], capture_output=True)
        except OSError:
            return False
        return result.returncode == 0


PLAIN_PROGRAM = "int main() { return 0; }\n"
OPENMP_PROGRAM = "#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: a failed extension is reported once and skipped."""

    def build_extensions(self):
        cxx = self.compiler.compiler_cxx[0] if getattr(self.compiler, "compiler_cxx", None) else "c++"
        if not compiles(cxx, PLAIN_PROGRAM):
            self.warn(
                f"minitensor: no working C++ compiler ({cxx}); skipping the compiled extensions. minitensor will "
                "use its numpy backend and the pure-Python autograd engine."
            )
            return
        openmp = compiles(cxx, OPENMP_PROGRAM, ["-fopenmp"])
        self.failed = []
        for ext in self.extensions:
            if ext.name == "minitensor._C":
                if openmp:
                    ext.extra_compile_args.append("-fopenmp")
                    ext.extra_link_args.append("-fopenmp")
                else:
                    self.warn("minitensor: the C++ compiler has no OpenMP; kernels will run single-threaded.")
            try:
                self.build_extension(ext)
            except Exception as exc:  # compiler missing or broken: fall back, do not fail the install
                self.failed.append((ext.name, exc))
        if self.failed:
            names = ", ".join(name for name, _ in self.failed)
            self.warn(
                f"minitensor: could not build {names} ({self.failed[0][1]}); "
                "minitensor will use its numpy backend and the pure-Python autograd engine."
            )

    def run(self):
        try:
            super().run()
        except Exception as exc:  # e.g. no compiler at all: distutils fails before build_extensions
            self.warn(
                f"minitensor: compiled extensions skipped ({exc}); "
                "minitensor will use its numpy backend and the pure-Python autograd engine."
            )


def extensions():
    exts = []
    if Pybind11Extension is not None and shutil.which(os.environ.get("CXX", "c++")):
        sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
        exts.append(
            Pybind11Extension(
                "minitensor._C",
                sources,
                include_dirs=["csrc"],
                cxx_std=17,
                # -Wno-psabi: the baseline (SSE2) build of the kernels passes AVX-sized vectors between inlined
                # helpers, which GCC notes as an ABI change; those functions never cross a call boundary.
                extra_compile_args=["-O3", "-fno-math-errno", "-Wno-psabi"],
                depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),
            )
        )
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("minitensor: Cython not found; the Cython autograd engine is skipped.", file=sys.stderr)
    else:
        # the compiled engine records the hash of the engine.py it was built from, so that an engine.py edited
        # since (without a rebuild) is noticed at import instead of silently running the old compiled walk
        with open(os.path.join("minitensor", "autograd", "engine.py"), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        pxi = os.path.join("minitensor", "autograd", "_engine_source.pxi")
        line = f'SOURCE_SHA256 = "{digest}"\n'
        if not os.path.exists(pxi) or open(pxi).read() != line:
            with open(pxi, "w") as f:
                f.write(line)
        exts.extend(
            cythonize(
                ["minitensor/autograd/_engine.pyx"],
                compiler_directives={"language_level": "3"},
                quiet=True,
            )
        )
    return exts


setup(
    packages=[
        "minitensor",
        "minitensor.autograd",
        "minitensor.backend",
        "minitensor.data",
        "minitensor.distributed",
        "minitensor.nn",
        "minitensor.nn.utils",
        "minitensor.ops",
        "minitensor.optim",
        "minitensor.testing",
        "minitensor.utils",
        "minitensor.models",
    ],
    # The model zoo lives at the top level (models/) but installs as minitensor.models,
    # so no top-level package named `models` lands in site-packages.
    package_dir={"minitensor.models": "models"},
    package_data={"minitensor.data": ["bundled/mnist/*.gz", "bundled/mnist/README.md"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    zip_safe=False,
)
