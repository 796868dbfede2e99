"""Train the default proxy metric on the embedded simulated IMI (offline). See `--help`."""

from interpscore.train import main

if __name__ == "__main__":
    main()
