"""Subcommands of the ``hmpo`` CLI, one module each.

Each module defines ``configure(parser)`` (adds its arguments) and ``run(args) -> int``
(the exit status). Modules are imported lazily so that ``hmpo means`` does not pay for
sympy or the trainer.
"""
