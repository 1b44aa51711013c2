"""The Graphite render API's pure parts: target expressions, times, globs, functions.

No I/O here (``query.graphite`` reads the store and answers HTTP): a target is parsed
(``expr``), its path expressions are matched against metric names (``glob``), the
series read for them are transformed by the functions (``functions``) and consolidated
for display (``series``). Semantics follow graphite-web 1.1; docs/grafana.md lists
where we differ.
"""
