"""Does the simulated release repeat in differently configured environments? Builds the same
release (a small config by default; `--full` for the default one) under other thread counts and
other CPU dispatch settings of the libraries (the environment variables of oneDNN, torch's ATen,
OpenBLAS and numpy), and compares the stage hashes of `simulation.json` (pools, exemplars,
observer features, noise levels, every audience's answers). `--unpinned` builds the same way
without `simulate.pinned`'s kernel pins, to show what the pins hold still.

    python benchmarks/repeatability.py [--out benchmarks/results/repeatability.json]
    python benchmarks/repeatability.py --full --against RELEASE/simulation.json \
        --out benchmarks/results/repeatability_full.json
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import emit  # noqa: E402

SMALL = dict(models=["efficientnet_lite0", "resnet18@random"], units_per_model=16,
             hard={"efficientnet_lite0": ["hard85"]}, pool_size=400, heldout_pool_size=300,
             image_size=64, n_batches=3, responses_per_unit=20)
# Each one asks the libraries for other kernels (CPU dispatch levels, thread counts); the
# pinned build caps them all at AVX2 (`interpscore.kernels.CPU_KERNELS`), the unpinned one
# (`--unpinned`) takes what it is asked for. A level the CPU lacks is skipped (`cpu_supports`).
ENVIRONMENTS = {
    "as is": {},
    "one thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    "ATen default": {"ATEN_CPU_CAPABILITY": "default"},
    "ATen avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ATen avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
    "oneDNN SSE4.1": {"ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41"},
    "oneDNN AVX-512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "DNNL_MAX_CPU_ISA": "AVX512_CORE"},
    "other kernels": {"ONEDNN_MAX_CPU_ISA": "SSE41", "DNNL_MAX_CPU_ISA": "SSE41",
                      "ATEN_CPU_CAPABILITY": "default", "OPENBLAS_CORETYPE": "Sandybridge",
                      "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                      "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
                      "OMP_NUM_THREADS": "3"},
}
NEEDS = {"ATen avx2": "avx2", "ATen avx512": "avx512f", "oneDNN AVX-512": "avx512f"}


def cpu() -> dict:
    """This machine's processor: its name and the SIMD flags that decide the kernels."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), "unknown")
    return {"model": name, "simd": sorted(f for f in flags if f.startswith(("avx", "fma", "sse")))}


def cpu_supports(environment: str, flags: list[str]) -> bool:
    return NEEDS.get(environment, "sse4_1") in flags


def build(out: Path, config: dict, extra: dict, pinned: bool) -> tuple[dict, float]:
    from interpscore.simulate.pinned import PINNED_FLAG

    env = {**os.environ, **extra, "PYTHONPATH": str(ROOT / "src")}
    if not pinned:  # the child believes it is already pinned, so it builds as it is
        env[PINNED_FLAG] = "1"
    code = ("import json, sys; from interpscore.simulate.config import SimulationConfig; "
            "from interpscore.simulate.release import simulate; "
            "simulate(sys.argv[1], SimulationConfig(**json.loads(sys.argv[2])), progress=False)")
    started = time.time()
    subprocess.run([sys.executable, "-c", code, str(out), json.dumps(config)], env=env,
                   check=True)
    return json.loads((out / "simulation.json").read_text())["hashes"], time.time() - started


def main():
    from interpscore.simulate.config import SimulationConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the default release (minutes each)")
    parser.add_argument("--unpinned", action="store_true", help="also build without the pins")
    parser.add_argument("--against", help="a release's simulation.json (for example the one "
                        "the README's numbers came from) whose hashes the builds must equal")
    parser.add_argument("--environments", nargs="+", choices=list(ENVIRONMENTS),
                        default=list(ENVIRONMENTS), help="which of them (default: all)")
    parser.add_argument("--out")
    args = parser.parse_args()
    config = asdict(SimulationConfig()) if args.full else SMALL
    machine = cpu()
    environments = {name: ENVIRONMENTS[name] for name in args.environments
                    if cpu_supports(name, machine["simd"])}
    result = {"benchmark": "repeatability", "config": "default" if args.full else SMALL,
              "cpu": machine, "environments": environments, "runs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for pinned in (True, False) if args.unpinned else (True,):
            label = "pinned" if pinned else "unpinned"
            hashes = {}
            for name, extra in environments.items():
                out = Path(scratch) / f"{label}-{name.replace(' ', '_')}"
                hashes[name], seconds = build(out, config, extra, pinned)
                print(f"{label} / {name}: {seconds:.0f} s", file=sys.stderr)
            first = next(iter(hashes.values()))
            result["runs"][label] = {
                "identical": all(h == first for h in hashes.values()),
                "stages_that_differ": sorted({stage for h in hashes.values() for stage in h
                                              if h[stage] != first[stage]}),
                "hashes": hashes}
    if args.against:
        recorded = json.loads(Path(args.against).read_text())["hashes"]
        result["against"] = {"release": str(args.against), "identical": all(
            run["hashes"][name] == recorded for run in result["runs"].values()
            for name in run["hashes"])}
    emit(result, args.out)


if __name__ == "__main__":
    main()
