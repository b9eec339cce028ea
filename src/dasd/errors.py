"""User-facing errors: one line that names the bad input and the fix."""


class DasdError(Exception):
    """A problem with the user's input or settings; the CLI prints it as one line and exits 2."""
