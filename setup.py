"""Builds the Cython hot core (fastq/_core). Without Cython or a compiler the pure-Python twins are used."""
import os

from setuptools import setup

ext_modules = []
if not os.environ.get("FASTQ_PURE"):
    try:
        from Cython.Build import cythonize

        ext_modules = cythonize(
            ["fastq/_core/*.pyx"],
            compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
            quiet=True,
        )
    except ImportError:  # pragma: no cover - the sdist without Cython installs pure
        ext_modules = []

setup(ext_modules=ext_modules)
