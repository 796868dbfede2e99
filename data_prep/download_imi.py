"""Download the IMI release (Zenodo 8131197) with md5 checks: same as `interpscore download-imi`.

    python data_prep/download_imi.py --out data/imi
"""

import sys

from interpscore.cli import main

if __name__ == "__main__":
    sys.exit(main(["download-imi", *sys.argv[1:]]))
