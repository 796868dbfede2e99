"""Train the default proxy metric on the embedded simulated IMI (offline). See `--help`."""

import sys

from interpscore.kernels import pin_cpu_kernels

pin_cpu_kernels()  # before torch loads: the same float bits on every x86-64 CPU

from interpscore.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
