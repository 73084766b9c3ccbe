"""Build of the compiled rANS step loops; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "neuralcodec.entropy._rans",
            sources=["neuralcodec/entropy/_rans.c"],
            extra_compile_args=["-O3", "-std=c99"],
        )
    ]
)
