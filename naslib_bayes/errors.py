"""Errors that the command line reports as one line on stderr with exit code 2."""


class UserError(ValueError):
    """Bad input from a user: a file, field, value or argument. Its message names the thing."""
