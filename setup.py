"""Package discovery; the rest of the build lives in pyproject.toml. Here because pyproject's `packages.find` cannot
add weights/, which installs as the data package sliq_cli.weights (package-dir in pyproject.toml)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["sliq_cli", "sliq_cli.*"]), "sliq_cli.weights"])
