"""The ``cleftscore`` command line: one module per group of commands, registered by :mod:`service.cli.main`."""
