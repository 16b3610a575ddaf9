"""User-facing errors: the CLI prints these as one clear line instead of a traceback."""


class SRPError(ValueError):
    """Bad input or configuration; the message names the file, line or key."""
