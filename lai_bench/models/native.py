"""Native CPU kernels for the light attentions' fused training path (csrc/depthwise3x3.cpp).

The fused path convolves every sample's channel with its own 3x3 kernel. PyTorch runs that through oneDNN,
which reorders each NCHW batch slice into a blocked layout and back: about half of every call. The kernels here
read NCHW planes directly. They are compiled on first use with the system C++ compiler (under a second), cached
per machine type under ~/.cache/lai_bench/native (or $LAI_BENCH_NATIVE_CACHE) and loaded with ctypes.

Without a compiler, or with LAI_BENCH_NATIVE=0, `available()` is False and fused.py uses PyTorch's convs:
the same numbers, slower.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "depthwise3x3.cpp"
# -march=native: the binary is for this CPU type, so the cache key holds the CPU's flags.
FLAGS = ["-O3", "-march=native", "-fopenmp", "-std=c++17", "-shared", "-fPIC"]
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lai_bench" / "native"
    return Path(os.environ.get("LAI_BENCH_NATIVE_CACHE", default))


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def library_path(compiler: str) -> Path:
    """Where the build for this source, compiler, flags and CPU type lives."""
    key = "\n".join([SOURCE.read_text(), compiler, " ".join(FLAGS), platform.machine(), _cpu_flags()])
    return cache_dir() / f"depthwise3x3-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"


def build(compiler: str) -> Path:
    """Compile the kernels unless this exact build is cached; concurrent builds (a job array) each write a
    private file and rename it into place."""
    path = library_path(compiler)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed to build {SOURCE.name}:\n{result.stderr.strip()}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def find_compiler() -> Optional[str]:
    """$CXX, else g++ or c++ on the PATH; None without one."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


@functools.lru_cache(maxsize=None)
def _library() -> Optional[ctypes.CDLL]:
    if os.environ.get("LAI_BENCH_NATIVE", "1") == "0":
        return None
    compiler = find_compiler()
    if compiler is None:
        warnings.warn("lai_bench: no C++ compiler found (g++ or $CXX); the light attentions' CPU training path "
                      "uses PyTorch's depthwise convs (same numbers, slower)", stacklevel=3)
        return None
    try:
        lib = ctypes.CDLL(str(build(compiler)))  # torch is loaded: its libgomp serves the kernels' OpenMP too
    except (OSError, RuntimeError) as err:
        warnings.warn(f"lai_bench: native CPU kernels unavailable, using PyTorch's convs: {err}", stacklevel=3)
        return None
    ptr, long_, int_ = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    for suffix in _SUFFIX.values():
        getattr(lib, f"depthwise3x3_{suffix}").argtypes = [ptr, ptr, ptr, ptr, long_, long_, long_, int_, int_]
        getattr(lib, f"depthwise3x3_kernel_grad_{suffix}").argtypes = [ptr, ptr, ptr, long_, long_, long_, int_]
    return lib


def available() -> bool:
    return _library() is not None


def supports(x: Tensor) -> bool:
    """Whether the kernels apply to x: a float32/float64 CPU tensor, with the library built."""
    return x.device.type == "cpu" and x.dtype in _SUFFIX and available()


def _ptr(t: Optional[Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def depthwise3x3(x: Tensor, kernels: Tensor, addend: Optional[Tensor] = None, flip: bool = False,
                 out: Optional[Tensor] = None) -> Tensor:
    """Each sample's channel convolved with its own 3x3 kernel (stride 1, zero padding 1), plus `addend`.

    x [B, C, H, W], kernels [B, C, 3, 3]; `flip` turns the kernels by 180 degrees (the input gradient of the
    conv); `out` (contiguous, may be `addend`) receives the result.
    """
    x, kernels = x.contiguous(), kernels.contiguous().to(x.dtype)
    addend = None if addend is None else addend.contiguous()
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    b, c, h, w = x.shape
    if kernels.shape != (b, c, 3, 3) or (addend is not None and addend.shape != x.shape) or out.shape != x.shape \
            or not out.is_contiguous():
        raise ValueError(f"depthwise3x3: x {tuple(x.shape)}, kernels {tuple(kernels.shape)}, addend "
                         f"{None if addend is None else tuple(addend.shape)}, out {tuple(out.shape)}: expected "
                         "kernels [B, C, 3, 3] and addend/out (contiguous) shaped like x")
    getattr(_library(), f"depthwise3x3_{_SUFFIX[x.dtype]}")(
        x.data_ptr(), kernels.data_ptr(), _ptr(addend), out.data_ptr(), b * c, h, w, int(flip),
        torch.get_num_threads())
    return out


def depthwise3x3_kernel_grad(grad: Tensor, x: Tensor) -> Tensor:
    """The gradient of `depthwise3x3`'s kernels: sum over H, W of grad times x shifted by each tap, [B, C, 3, 3]."""
    grad, x = grad.contiguous(), x.contiguous()
    if grad.shape != x.shape or grad.dtype != x.dtype:
        raise ValueError(f"depthwise3x3_kernel_grad: grad {tuple(grad.shape)} {grad.dtype} and x {tuple(x.shape)} "
                         f"{x.dtype} must match")
    b, c, h, w = x.shape
    out = torch.empty(b, c, 3, 3, dtype=x.dtype)
    getattr(_library(), f"depthwise3x3_kernel_grad_{_SUFFIX[x.dtype]}")(
        grad.data_ptr(), x.data_ptr(), out.data_ptr(), b * c, h, w, torch.get_num_threads())
    return out
