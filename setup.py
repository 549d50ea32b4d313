"""Build script: CMakeLists.txt builds the CUDA extension swav_kernels._C when a CUDA
compiler is found; otherwise the package installs as pure Python. Either way the outcome
is printed and recorded in swav_kernels/_build_info.py.

Environment:
    SWAV_KERNELS_BUILD_CUDA   auto (default) | 0 (never) | 1 (fail if it cannot be built)
    SWAV_KERNELS_CUDA_ARCHS   CMAKE_CUDA_ARCHITECTURES, default "80;90" (e.g. "90a", "80;86;90")
    SWAV_KERNELS_BUILD_JOBS   parallel compile jobs (default: CPU count)
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures CMakeLists.txt and builds the extension only if CMake found nvcc."""

    def run(self) -> None:
        self._outputs = []
        mode = os.environ.get("SWAV_KERNELS_BUILD_CUDA", "auto").strip().lower()
        if mode not in ("auto", "0", "1"):
            raise SystemExit(f"SWAV_KERNELS_BUILD_CUDA must be auto, 0 or 1, got {mode!r}")
        status = self._build(self.extensions[0], mode)
        print(f"swav_kernels: CUDA extension {status}", flush=True)
        if mode == "1" and not status.startswith("built"):
            raise SystemExit(f"SWAV_KERNELS_BUILD_CUDA=1 but the CUDA extension was not built ({status})")
        self._write_build_info(status)

    def _build(self, ext: Extension, mode: str) -> str:
        extension_path = Path(self.get_ext_fullpath(ext.name)).resolve()
        cmake = shutil.which("cmake")
        if cmake is None:
            extension_path.unlink(missing_ok=True)
            return "skipped: cmake not found"
        import pybind11

        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        archs = os.environ.get("SWAV_KERNELS_CUDA_ARCHS", "80;90").replace(",", ";")
        configure = [
            cmake, "--fresh", "-S", str(ROOT), "-B", str(build_temp),  # no cached compiler probe from a past build
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DSWAV_KERNELS_BUILD_CUDA={'OFF' if mode == '0' else 'ON'}",
            f"-DCMAKE_CUDA_ARCHITECTURES={archs}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DSWAV_KERNELS_OUTPUT_DIR={extension_path.parent}",
        ]
        subprocess.run(configure, check=True)
        status = (build_temp / "cuda_extension_status.txt").read_text().strip()
        if not status.startswith("built"):
            extension_path.unlink(missing_ok=True)  # a stale module from an earlier build must not ship
            return status
        jobs = os.environ.get("SWAV_KERNELS_BUILD_JOBS", str(os.cpu_count() or 1))
        subprocess.run([cmake, "--build", str(build_temp), "--parallel", jobs], check=True)
        # CMake names the module with the interpreter's extension suffix, as setuptools does.
        if not extension_path.exists():
            raise SystemExit(f"CMake reported success but {extension_path} is missing")
        self._outputs.append(str(extension_path))
        return status

    def _write_build_info(self, status: str) -> None:
        package_dir = Path(self.get_ext_fullpath(self.extensions[0].name)).resolve().parent
        package_dir.mkdir(parents=True, exist_ok=True)
        info = package_dir / "_build_info.py"
        info.write_text(
            '"""Written by setup.py at build time: whether the CUDA extension was built."""\n'
            f"CUDA_EXTENSION_BUILT = {status.startswith('built')!r}\n"
            f"CUDA_EXTENSION_STATUS = {status!r}\n"
        )
        self._outputs.append(str(info))

    def get_outputs(self):
        return [path for path in getattr(self, "_outputs", []) if os.path.exists(path)]


setup(
    ext_modules=[CMakeExtension("swav_kernels._C")],
    cmdclass={"build_ext": CMakeBuild},
)
