"""Package discovery: every package under edgekit/ is found (a new subpackage cannot be left out of
the wheel), plus the two data folders that ship as package data (see pyproject.toml's package-dir)."""
from setuptools import find_packages, setup

setup(packages=find_packages(include=["edgekit", "edgekit.*"])
      + ["edgekit._data.device_profiles", "edgekit._data.exporters"])
