"""The simulated release is built in a child process whose CPU kernels are pinned, so the same
config gives the same bytes on every machine and in every environment.

What moved between builds was float noise in the observers' network features (EfficientNet-
Lite2's texture statistics and pre-logits: ~1e-7, from the thread count and the kernels' CPU
dispatch), which the rounded reaction times carried into the answers. Rounding cannot remove
such noise (a value near a rounding edge still flips), so the kernels are fixed instead: one
thread count, and every library capped at the same instruction set (AVX2, which every x86-64
CPU of the last decade has), the GPU left out. `benchmarks/repeatability.py` builds a release
under other thread counts and dispatch settings and compares the stage hashes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError
from ..kernels import CPU_KERNELS

PINNED_FLAG = "INTERPSCORE_PINNED_BUILD"
THREADS = "2"
PINNED_ENVIRONMENT = {
    "CUDA_VISIBLE_DEVICES": "",  # the CPU: a GPU computes otherwise
    "OMP_NUM_THREADS": THREADS, "MKL_NUM_THREADS": THREADS,  # torch's intra-op threads
    "OPENBLAS_NUM_THREADS": "1",  # numpy / scipy / scikit-learn
    **CPU_KERNELS,  # every library no wider than AVX2
}


def environment() -> dict[str, str]:
    return {**os.environ, **PINNED_ENVIRONMENT, PINNED_FLAG: "1"}


def run_pinned(out: Path, config, progress: bool, overwrite: bool) -> None:
    """Build the release in a child process under `PINNED_ENVIRONMENT` (release.build_here)."""
    command = [sys.executable, "-m", "interpscore.simulate.release", str(out),
               json.dumps(asdict(config))]
    command += ["--progress"] if progress else []
    command += ["--overwrite"] if overwrite else []
    done = subprocess.run(command, env=environment(), stderr=subprocess.PIPE, text=True)
    if done.returncode == 0:
        return
    if done.returncode == 130:
        raise KeyboardInterrupt
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if done.returncode == 2 and lines and lines[-1].startswith("error: "):
        raise InputError(lines[-1].removeprefix("error: "))
    raise RuntimeError("the simulated release failed to build:\n" + "\n".join(lines[-30:]))


def in_pinned_build() -> bool:
    return os.environ.get(PINNED_FLAG) == "1"


def check_pins_held() -> None:
    """In the pinned child on x86-64: fail, naming them, where kernels wider than AVX2 are still
    dispatched (a library that renamed its switches), rather than build a release that would
    not repeat on another CPU."""
    import platform

    from ..kernels import X86_64

    wide = wider_than_avx2() if platform.machine() in X86_64 else []
    if wide:
        raise RuntimeError(f"the CPU kernel pins did not take effect for {', '.join(wide)}; "
                           "this release would not repeat on another CPU: update "
                           "interpscore.kernels.CPU_KERNELS for this library version")


def library_versions() -> dict[str, str]:
    """The versions of what a release's bytes depend on, recorded beside its hashes."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("numpy", "scipy", "scikit-learn", "scikit-image", "pillow", "torch", "timm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def wider_than_avx2() -> list[str]:
    """The kernels this process dispatches wider than AVX2 (numpy's dispatch targets, torch's
    ATen capability): empty where `CPU_KERNELS` took effect."""
    import numpy  # noqa: F401
    import torch

    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    wide = [f"numpy {name}" for name in __cpu_dispatch__
            if __cpu_features__.get(name) and (name.startswith("AVX512") or name == "X86_V4")]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        wide.append(f"torch ATen {capability}")
    return wide
