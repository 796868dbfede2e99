"""Turn IMI responses (+ images) into the prepared dataset: same as `interpscore prepare`.

    python data_prep/prepare_imi.py --responses data/imi/human_responses.zip \
        --images data/imi/image_data --out data/imi_prepared
"""

import sys

from interpscore.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
