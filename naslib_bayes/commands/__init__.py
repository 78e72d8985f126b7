"""Subcommands of the ``naslib-bayes`` command line, one module each."""
