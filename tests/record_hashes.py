"""Record the stage hashes of the tests' tiny simulated release (tests/test_simulate.py checks a
fresh build against them). Run after a change to the simulator that is meant to change its data:

    python tests/record_hashes.py
"""

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORDED = HERE / "fixtures" / "tiny_release_hashes.json"


def main():
    sys.path.insert(0, str(HERE))
    from test_simulate import TINY

    from interpscore.simulate.config import SimulationConfig
    from interpscore.simulate.release import simulate

    with tempfile.TemporaryDirectory() as scratch:
        out = simulate(Path(scratch) / "release", SimulationConfig(**TINY), progress=False)
        built = json.loads((out / "simulation.json").read_text())
    RECORDED.write_text(json.dumps({k: built[k] for k in ("simulator", "hashes", "libraries")},
                                   indent=2) + "\n")
    print(f"recorded -> {RECORDED}")


if __name__ == "__main__":
    main()
