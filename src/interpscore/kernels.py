"""CPU kernels capped at one instruction set, so a CPU run computes the same float bits on every
x86-64 machine.

A fresh clone that computed its embeddings with other kernels (oneDNN and ATen capped at SSE4.1)
printed the `stage_mis` baseline's within-group Spearman as 0.499 instead of 0.498: the
embeddings moved by ~1e-6 and a near-tie between two units flipped. The thread count is left to
the machine (capping it would slow every CPU run): it moved no printed digit, only the bits of an
image embedded alone (a batch of one). Every library reads these variables once, when it first
loads, so the command-line entry points set them before torch or numpy is imported (a process
that imported them already keeps the kernels it has). AVX2 is what every x86-64 CPU of the last
decade has; on another architecture (Arm) they would name nothing, and are not set. A GPU is not
touched.

This module imports nothing heavy (an import-linter contract keeps it so).
"""

from __future__ import annotations

import os
import platform
import sys

# numpy's names of its AVX-512 dispatch targets: before 2.4 one per feature group, from 2.4 on
# grouped as X86_V4 (numpy 2.4 on an AVX-512 Xeon dispatched X86_V4 loops under the old names
# alone, and the release's observer features moved). A name a numpy does not dispatch is passed
# over (with an ImportWarning, hidden by default); `wider_than_avx2` checks what took effect.
AVX512 = ("X86_V4 AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL "
          "AVX512_ICL AVX512_SPR AVX512FP16")
CPU_KERNELS = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",  # convolutions
    "MKL_CBWR": "AVX2,STRICT",  # matrix products (conditional numerical reproducibility)
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # and no lower: a cap below AVX2 moved the features
    "OPENBLAS_CORETYPE": "Haswell",  # numpy's and scipy's BLAS
    "NPY_DISABLE_CPU_FEATURES": AVX512,  # numpy's loops dispatch no wider than AVX2
}
HEAVY = ("torch", "numpy")
X86_64 = ("x86_64", "AMD64")


def pin_cpu_kernels() -> bool:
    """Set `CPU_KERNELS` in this process's environment (over what was there) on an x86-64 CPU, unless torch or
    numpy is loaded already, where it would change nothing in this process; says whether it set
    them."""
    if platform.machine() not in X86_64 or any(name in sys.modules for name in HEAVY):
        return False
    os.environ.update(CPU_KERNELS)
    return True

