"""dlr's version and the name of its distribution on the package index, in a module that
imports nothing, for ``dlr --version`` and the install hints (pyproject.toml states both too; a
test keeps them equal)."""

__version__ = "0.1.0"

#: What ``pip install`` calls dlr: ``dlr`` on the package index is an unrelated project.
DISTRIBUTION = "dlr-logistic"
