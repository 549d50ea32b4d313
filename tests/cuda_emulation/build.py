"""Builds csrc/ for the CPU with the emulation in emu.h, as the Python module
``swav_kernels_emulated`` (the same bindings as ``swav_kernels._C``, plus ``emulated_launches()``:
the names of the kernels launched since its last call).

The sources are copied, every ``kernel<<<config>>>(args)`` becomes
``::emu::Launch(config).run("kernel", kernel, args)``, and g++ compiles the CUDA files as C++20
with emu.h force-included. Builds are cached by a hash of the inputs.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).parent.resolve()
CSRC = HERE.parents[1] / "csrc"
MODULE = "swav_kernels_emulated"
LAUNCH = re.compile(r"(\w+(?:<[^<>;]*>)?)\s*<<<(.+?)>>>\s*\(", re.S)


def cuda_include_dir() -> Path | None:
    candidates = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.insert(0, str(Path(nvcc).resolve().parents[1]))
    for root in candidates:
        if root and (Path(root) / "include" / "cuda_fp16.h").exists():
            return Path(root) / "include"
    return None


REQUIRE_ENV = "SWAV_KERNELS_REQUIRE_EMULATION"


def required() -> bool:
    """True where the emulation must run (CI sets SWAV_KERNELS_REQUIRE_EMULATION=1): its tests
    then fail on the reason instead of skipping, so a machine that lost g++ or the CUDA
    headers cannot pass with the CUDA kernels untested."""
    return os.environ.get(REQUIRE_ENV) == "1"


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> str | None:
    """None when this machine can build the emulation; else why not."""
    if shutil.which("g++") is None:
        return "g++ not found"
    probe = subprocess.run(["g++", "-std=c++20", "-fsyntax-only", "-x", "c++", "-"], input="#include <barrier>\n",
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return "g++ lacks C++20 <barrier> (needs GCC >= 11)"
    if cuda_include_dir() is None:
        return "CUDA headers (cuda_fp16.h) not found"
    try:
        import pybind11  # noqa: F401
    except ImportError:
        return "pybind11 is not installed"
    return None


def _kernel_name(expression: str) -> str:
    return expression.split("<", 1)[0]


def _transform(text: str) -> str:
    text = LAUNCH.sub(lambda m: f'::emu::Launch({m.group(2)}).run("{_kernel_name(m.group(1))}", {m.group(1)}, ', text)
    # the emulated module also reports the kernels it launched (tests/launch_count.py counts them)
    return text.replace("PYBIND11_MODULE(_C, m) {", f"PYBIND11_MODULE({MODULE}, m) {{\n  "
                        'm.def("emulated_launches", &::emu::take_launches, "Names of the kernels launched since the '
                        'last call, in order.");')


def _prepare(extra_hash: bytes = b"") -> tuple[Path, Path, list[str]]:
    """(output dir keyed by the inputs, transformed source dir, common g++ flags)."""
    import pybind11

    sources = sorted(p for p in CSRC.rglob("*") if p.suffix in (".cu", ".cuh", ".h", ".cpp"))
    digest = hashlib.sha256(extra_hash + (HERE / "emu.h").read_bytes() + Path(__file__).read_bytes())
    for path in sources:
        digest.update(str(path.relative_to(CSRC)).encode() + path.read_bytes())
    out_dir = HERE / "build" / digest.hexdigest()[:16]
    src_dir = out_dir / "csrc"
    if not src_dir.exists():
        staging = out_dir / "csrc.partial"
        shutil.rmtree(staging, ignore_errors=True)
        for path in sources:
            copy = staging / path.relative_to(CSRC)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(_transform(path.read_text()))
        staging.rename(src_dir)
    flags = ["g++", "-std=c++20", "-fPIC", "-w", "-pthread", "-include", str(HERE / "emu.h"), f"-I{src_dir}",
             f"-I{cuda_include_dir()}", f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
    return out_dir, src_dir, flags


def _compile(units: list[Path], flags: list[str], obj_dir: Path, jobs: int | None) -> list[Path]:
    obj_dir.mkdir(parents=True, exist_ok=True)

    def compile_unit(unit: Path) -> Path:
        obj = obj_dir / (unit.stem + ".o")
        subprocess.run([*flags, "-x", "c++", "-c", str(unit), "-o", str(obj)], check=True)
        return obj

    with ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
        return list(pool.map(compile_unit, units))


def build(jobs: int | None = None):
    """Compiles (or reuses) the emulated module and imports it."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"cannot build the CUDA emulation: {reason}")
    out_dir, src_dir, flags = _prepare()
    target = out_dir / f"{MODULE}{sysconfig.get_config_var('EXT_SUFFIX')}"
    if not target.exists():
        units = [p for p in src_dir.rglob("*") if p.suffix in (".cu", ".cpp")]
        objects = _compile(units, [*flags, "-O2"], out_dir / "module", jobs)
        partial = target.with_suffix(".partial")
        subprocess.run(["g++", "-shared", "-pthread", *map(str, objects), "-o", str(partial)], check=True)
        partial.rename(target)
    spec = importlib.util.spec_from_file_location(MODULE, target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[MODULE] = module
    return module


def check_driver_syntax(driver: Path | None = None) -> subprocess.CompletedProcess:
    """``g++ -fsyntax-only`` on a driver (default: sanitize_driver.cpp) against the current csrc/
    headers, as build_sanitized compiles it: seconds, so every test run keeps the opt-in
    sanitizer driver in step with csrc/. Returns the finished process (returncode, stderr)."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"cannot build the CUDA emulation: {reason}")
    driver = HERE / "sanitize_driver.cpp" if driver is None else driver
    _, _, flags = _prepare()
    return subprocess.run([*flags, "-fsyntax-only", "-x", "c++", str(driver)], capture_output=True, text=True)


def build_sanitized(sanitizer: str, jobs: int | None = None) -> Path:
    """Compiles (or reuses) sanitize_driver.cpp with every kernel under -fsanitize=``sanitizer``
    (address or thread); returns the executable."""
    if sanitizer not in ("address", "thread"):
        raise ValueError(f"sanitizer must be 'address' or 'thread', got {sanitizer!r}")
    driver = HERE / "sanitize_driver.cpp"
    out_dir, src_dir, flags = _prepare(driver.read_bytes())
    target = out_dir / f"driver-{sanitizer}"
    if not target.exists():
        units = [p for p in src_dir.rglob("*") if p.suffix == ".cu" or p.name == "launch.cpp"] + [driver]
        sanitize = [*flags, "-O1", "-g", f"-fsanitize={sanitizer}"]
        objects = _compile(units, sanitize, out_dir / sanitizer, jobs)
        partial = target.with_suffix(".partial")
        subprocess.run(["g++", "-pthread", f"-fsanitize={sanitizer}", *map(str, objects), "-o", str(partial)],
                       check=True)
        partial.rename(target)
    return target


def build_sanitized_program(sanitizer: str, driver: Path, units: list[str],
                            remove_first: tuple[str, str] | None = None, jobs: int | None = None) -> Path:
    """Compiles (or reuses) ``driver`` with the csrc/ ``units`` it calls (paths relative to
    csrc/) under -fsanitize=``sanitizer``; returns the executable. ``remove_first=(unit, text)``
    deletes the first ``text`` from that unit's copy first (a ``__syncthreads();``, to show
    that the sanitizer reports its absence)."""
    if sanitizer not in ("address", "thread"):
        raise ValueError(f"sanitizer must be 'address' or 'thread', got {sanitizer!r}")
    out_dir, src_dir, flags = _prepare(driver.read_bytes() + repr((sanitizer, units, remove_first)).encode())
    target = out_dir / f"{driver.stem}-{sanitizer}"
    if not target.exists():
        paths = []
        for unit in units:
            path = src_dir / unit
            if remove_first is not None and remove_first[0] == unit:
                text = path.read_text()
                if remove_first[1] not in text:
                    raise ValueError(f"{unit} has no {remove_first[1]!r} to remove")
                path = path.with_name(f"{path.stem}.edited{path.suffix}")  # same folder: relative includes hold
                path.write_text(text.replace(remove_first[1], "/* removed by build_sanitized_program */", 1))
            paths.append(path)
        objects = _compile([*paths, driver], [*flags, "-O1", "-g", f"-fsanitize={sanitizer}"], out_dir / sanitizer, jobs)
        partial = target.with_suffix(".partial")
        subprocess.run(["g++", "-pthread", f"-fsanitize={sanitizer}", *map(str, objects), "-o", str(partial)],
                       check=True)
        partial.rename(target)
    return target


if __name__ == "__main__":
    print(build())
    for kind in sys.argv[1:]:
        print(build_sanitized(kind))
