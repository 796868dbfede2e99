"""Train the default proxy metric on the embedded simulated IMI (offline). See `--help`."""

import sys

from interpscore.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
