"""CPU kernels pinned by the command-line entry points: a run under other kernel settings
computes the same bits (each case in a fresh interpreter: the settings act only before torch
loads)."""

import os
import platform
import subprocess
import sys

import pytest

from interpscore.kernels import X86_64

pytestmark = pytest.mark.skipif(platform.machine() not in X86_64,
                                reason="the caps are x86-64's (elsewhere they are not set)")

OTHER_KERNELS = {"ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41",
                 "ATEN_CPU_CAPABILITY": "default"}

CONV_NET = """
import sys
if sys.argv[1] == "pin":
    from interpscore.kernels import pin_cpu_kernels
    assert pin_cpu_kernels()
import hashlib, torch
torch.manual_seed(0)
torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3),
                          torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 8))
with torch.no_grad():
    out = net(torch.rand(4, 3, 32, 32))
print(torch.backends.cpu.get_cpu_capability(), hashlib.md5(out.numpy().tobytes()).hexdigest())
"""


def run(code: str, *args: str, extra: dict | None = None, cwd=None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in OTHER_KERNELS}
    done = subprocess.run([sys.executable, "-c", code, *args], env={**env, **(extra or {})},
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.fixture(scope="module")
def avx2_machine():
    """Skips where the CPU has no AVX2, asked of a fresh torch when a test needs it (not when
    the suite is collected)."""
    if "AVX2" not in run("import torch; print(torch.backends.cpu.get_cpu_capability())"):
        pytest.skip("the caps are AVX2's; this CPU has no AVX2")


def test_pinned_kernels_compute_the_same_bits_under_other_kernel_settings(avx2_machine):
    plain = run(CONV_NET, "pin")
    assert run(CONV_NET, "pin", extra=OTHER_KERNELS) == plain
    assert plain.startswith("AVX2 ")
    # Without the pins the same settings change the bits: what the pins are for.
    unpinned = run(CONV_NET, "none", extra=OTHER_KERNELS)
    assert unpinned.startswith("DEFAULT ") and unpinned.split()[1] != plain.split()[1]


def test_the_interpscore_command_pins_before_its_work_and_a_loaded_torch_is_left_alone():
    command = ("import os, sys; sys.argv = ['interpscore', '--help']; "
               "from interpscore.cli import main; main(); print(os.environ['ATEN_CPU_CAPABILITY'])")
    assert run(command, extra=OTHER_KERNELS).splitlines()[-1] == "avx2"
    late = ("import os, torch; from interpscore.kernels import pin_cpu_kernels; "
            "print(pin_cpu_kernels(), os.environ['ATEN_CPU_CAPABILITY'])")
    assert run(late, extra=OTHER_KERNELS) == "False default"
    arm = ("import os, platform; platform.machine = lambda: 'aarch64'; "
           "from interpscore.kernels import pin_cpu_kernels; "
           "print(pin_cpu_kernels(), os.environ.get('ATEN_CPU_CAPABILITY'))")
    assert run(arm) == "False None"


def test_train_py_pins_when_it_loads():
    from conftest import ROOT

    command = ("import os, runpy; runpy.run_path('train.py', run_name='loaded'); "
               "print(os.environ['ATEN_CPU_CAPABILITY'])")
    assert run(command, extra=OTHER_KERNELS, cwd=ROOT) == "avx2"
