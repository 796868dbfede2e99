"""One exception type for bad input, so the CLI can print it plainly and exit non-zero."""


class InputError(ValueError):
    """Bad user input: the message names the file and the problem."""
