"""Only for the optional C accelerators; all metadata lives in pyproject.toml.

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
        ),
        # protocol/_sketch.c: the quantile sketch in C, bit for bit protocol/sketch.py's
        # PySketch (tests/test_sketch.py); its capsule (protocol/sketch_capi.h) lets
        # collector/_fastfeed.c add samples without a Python call. -ffp-contract=off: no
        # fused multiply-add, which would round unlike Python's two operations.
        Extension(
            "protocol._sketch",
            ["protocol/_sketch.c"],
            depends=["protocol/sketch_capi.h"],
            optional=True,
            extra_compile_args=["-O2", "-ffp-contract=off"],
        ),
        # store/_sqltext.c: the text of MySQL's point upserts (store/mysql.py's
        # python_upsert_statement is the reference; tests/test_sqltext.py holds both to
        # read back bit for bit).
        Extension(
            "store._sqltext",
            ["store/_sqltext.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
    ]
)
