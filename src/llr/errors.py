"""One exception type for user-facing errors: the CLI prints it as one line."""


class LLRError(Exception):
    """Bad input or configuration. The message is one line naming the file,
    key or value and what was expected."""
