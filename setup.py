"""Packaging glue: the weight cards live in the top-level weights/ folder and ship as zoo._weights."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["zoo", "zoo.*"]) + ["zoo._weights"],
    package_dir={"zoo._weights": "weights"},
)
