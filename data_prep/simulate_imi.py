"""Generate the simulated IMI release offline: same as `interpscore simulate`.

    python data_prep/simulate_imi.py --out data/simulated_imi
"""

import sys

from interpscore.cli import main

if __name__ == "__main__":
    sys.exit(main(["simulate", *sys.argv[1:]]))
