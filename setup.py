"""Only for the optional C accelerator; all metadata lives in pyproject.toml.

collector/_fastfeed.c parses every StatsD line and aggregates those of known names in
one pass (docs/performance-parser.md has the figures). It is optional: where no
compiler is available the build skips it and the collector uses the
pure-Python path, which gives identical results (tests/test_aggregator_fastpath.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "collector._fastfeed",
            ["collector/_fastfeed.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
