"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /api/openapi.json``.

Written out by hand (it is the contract, worth reading as one piece) and held against
the router by the tests: every route has an operation and every operation a route.
Limits that come from the configuration (body size, retention) are filled in.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Final

from protocol.alerts import (
    MAX_EMAIL_LENGTH,
    MAX_RULE_NAME,
    MAX_RULES,
    MAX_SECRET_LENGTH,
    MAX_TARGETS,
    MAX_URL_LENGTH,
    OPS,
    REDACTED,
    SIGNATURE_HEADER,
)
from protocol.buckets import (
    AGGREGATIONS,
    FILLS,
    LAST,
    MAX_QUERY_BUCKETS,
    PERCENTILE_PATTERN,
    PERCENTILES,
    UNIQUE,
)
from protocol.lines import FUTURE_TOLERANCE
from protocol.names import KINDS, MAX_NAME_LENGTH
from protocol.points import MAX_BATCH_POINTS, POINT_KINDS
from protocol.stathat import MAX_STAT_LENGTH as STATHAT_NAME_LENGTH
from query.config import HttpConfig
from query.errors import CODES

NAME_PATTERN: Final = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, *headers: str) -> Json:
    response: Json = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if headers:
        response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
    return response


_LIMIT_HEADERS: Final = ("X-RateLimit-Limit", "X-RateLimit-Remaining")


def _ok(schema: str, description: str) -> Json:
    return {
        "description": description,
        "headers": {h: {"$ref": f"#/components/headers/{h}"} for h in _LIMIT_HEADERS},
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _guarded_errors(scope: str) -> Json:
    """The errors every key-protected operation can answer."""
    return {
        "401": _error("Missing, invalid or revoked API key."),
        "403": _error(f"The API key lacks the `{scope}` scope.", *_LIMIT_HEADERS),
        "429": _error("The key's rate limit is exhausted; retry after `Retry-After` seconds.",
                      "Retry-After", *_LIMIT_HEADERS),
        "503": _error("The store is unavailable (nothing was recorded).", *_LIMIT_HEADERS),
    }


def _ingest(summary: str, description: str, schema: str, example: Json) -> Json:
    return {
        "post": {
            "operationId": f"ingest{schema}",
            "tags": ["ingest"],
            "summary": summary,
            "description": description,
            "security": [{"ApiKey": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(schema), "example": example}},
            },
            "responses": {
                "200": _ok("Accepted", "Committed to the database."),
                "400": _error("The body is not well-formed JSON.", *_LIMIT_HEADERS),
                "409": _error("Kind conflict: a point's metric is stored as the other kind, "
                              "or the request mixes kinds for one name. Nothing recorded.",
                              *_LIMIT_HEADERS),
                "413": _error("The body is larger than the limit.", *_LIMIT_HEADERS),
                "415": _error("The Content-Type is not application/json.", *_LIMIT_HEADERS),
                "422": _error("Invalid fields; `details` lists each with its index and field. "
                              "Nothing recorded.", *_LIMIT_HEADERS),
                **_guarded_errors("write"),
            },
        }
    }


def _graphite_paths(max_series: int) -> Json:
    """The Graphite read API (query/graphite.py): what Grafana's Graphite data source calls."""
    guarded = _guarded_errors("read")
    bad = _error("A target, time or parameter that cannot be served (the message names "
                 "the function, argument or parameter).", *_LIMIT_HEADERS)
    over = _error(f"Over a limit: a path matching more than {max_series} series "
                  "(--graphite-max-series), too many points, or the time budget.",
                  *_LIMIT_HEADERS)
    target = {"type": "array", "items": {"type": "string"},
              "description": "Target expressions, e.g. `aliasSub(sumSeries(app.*.requests), "
                             '"(^.*$)", "\\1 A")`; see docs/grafana.md for the functions.'}
    render_fields: Json = {
        "target": target,
        "from": {"type": "string", "default": "-1d",
                 "description": "now, -6h, -5min, epoch seconds, YYYYMMDD, HH:MM_YYYYMMDD."},
        "until": {"type": "string", "default": "now", "description": "As `from`; inclusive."},
        "format": {"type": "string", "enum": ["json", "csv"], "default": "json"},
        "maxDataPoints": {"type": "integer", "minimum": 1, "maximum": 1000000},
        "noNullPoints": {"type": "string", "enum": ["true", "false", "1", "0"]},
    }
    render_ok: Json = {
        "description": "One entry per series.",
        "headers": {h: {"$ref": f"#/components/headers/{h}"} for h in _LIMIT_HEADERS},
        "content": {
            "application/json": {"schema": _ref("GraphiteRender")},
            "text/csv": {"schema": {"type": "string",
                                    "description": "name,YYYY-MM-DD HH:MM:SS,value lines."}},
        },
    }
    security: list[Json] = [{"ApiKey": []}, {"Basic": []}]
    form = "application/x-www-form-urlencoded"

    def query_params(fields: Json) -> list[Json]:
        return [{"name": name, "in": "query", "required": False, "schema": schema,
                 **({"style": "form", "explode": True} if schema.get("type") == "array"
                    else {})}
                for name, schema in fields.items()]

    def operation(op_id: str, summary: str, fields: Json, ok: Json, post: bool) -> Json:
        op: Json = {"operationId": op_id, "tags": ["graphite"], "summary": summary,
                    "security": security,
                    "responses": {"200": ok, "400": bad, "422": over, **guarded}}
        if post:
            op["requestBody"] = {"required": False, "content": {form: {"schema": {
                "type": "object", "properties": fields}}}}
            op["responses"]["413"] = _error("The body is larger than the limit.",
                                            *_LIMIT_HEADERS)
        else:
            op["parameters"] = query_params(fields)
        return op

    find_fields: Json = {
        "query": {"type": "string", "description": "A path with * ? [a-z] {a,b} globs."},
        "format": {"type": "string", "enum": ["treejson", "completer", "json"],
                   "default": "treejson"},
        "wildcards": {"type": "string", "enum": ["0", "1"]},
        "from": {"type": "string"},
        "until": {"type": "string"},
    }
    expand_fields: Json = {
        "query": {"type": "array", "items": {"type": "string"}},
        "leavesOnly": {"type": "string", "enum": ["0", "1"]},
        "groupByExpr": {"type": "string", "enum": ["0", "1"]},
    }
    find_ok = _ok("GraphiteFind", "Matching nodes, branches first.")
    expand_ok = _ok("GraphiteExpand", "Matching paths, sorted.")
    return {
        "/render": {
            "get": operation("graphiteRender", "Render targets (Graphite)", render_fields,
                             render_ok, False),
            "post": operation("graphiteRenderForm", "Render targets (Graphite, form body)",
                              render_fields, render_ok, True),
        },
        "/metrics/find": {
            "get": operation("graphiteFind", "Find metric paths (Graphite)", find_fields,
                             find_ok, False),
            "post": operation("graphiteFindForm", "Find metric paths (Graphite, form body)",
                              find_fields, find_ok, True),
        },
        "/metrics/expand": {
            "get": operation("graphiteExpand", "Expand globs to paths (Graphite)",
                             expand_fields, expand_ok, False),
            "post": operation("graphiteExpandForm", "Expand globs (Graphite, form body)",
                              expand_fields, expand_ok, True),
        },
        "/functions": {"get": {
            "operationId": "graphiteFunctions", "tags": ["graphite"],
            "summary": "The render functions served, in graphite-web's shape",
            "security": security,
            "responses": {"200": _ok("GraphiteFunctions", "Function name -> description."),
                          **guarded},
        }},
        **{path: {"get": {
            "operationId": op_id, "tags": ["graphite"],
            "summary": f"Graphite tag {what} completion: always empty (no tags are stored)",
            "security": security,
            "parameters": [{"name": name, "in": "query", "required": False,
                            "schema": {"type": "string"}}
                           for name in ("tag", "tagPrefix", "valuePrefix", "expr", "limit")],
            "responses": {"200": _ok("GraphiteTags", "An empty list."), **guarded},
        }} for path, op_id, what in (
            ("/tags/autoComplete/tags", "graphiteTags", "name"),
            ("/tags/autoComplete/values", "graphiteTagValues", "value"))},
        "/version": {"get": {
            "operationId": "graphiteVersion", "tags": ["graphite"],
            "summary": "The graphite-web version whose API is served",
            "security": security,
            "responses": {"200": {
                "description": "A version string such as 1.1.10.",
                "headers": {h: {"$ref": f"#/components/headers/{h}"} for h in _LIMIT_HEADERS},
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }, **guarded},
        }},
    }


_GRAPHITE_SCHEMAS: Final[Json] = {
    "GraphiteRender": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["target", "tags", "datapoints"],
            "properties": {
                "target": {"type": "string"},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}},
                "datapoints": {"type": "array", "items": {
                    "type": "array", "minItems": 2, "maxItems": 2,
                    "items": {"type": ["number", "null"]},
                    "description": "[value or null, epoch seconds]"}},
            },
        },
    },
    "GraphiteFind": {
        "oneOf": [
            {"type": "array", "items": {
                "type": "object",
                "required": ["text", "id", "leaf", "expandable", "allowChildren"],
                "properties": {
                    "text": {"type": "string"}, "id": {"type": "string"},
                    "leaf": {"type": "integer", "enum": [0, 1]},
                    "expandable": {"type": "integer", "enum": [0, 1]},
                    "allowChildren": {"type": "integer", "enum": [0, 1]},
                    "context": {"type": "object"},
                },
            }},
            {"type": "object", "required": ["metrics"], "description": "format=completer",
             "properties": {"metrics": {"type": "array", "items": {
                 "type": "object", "required": ["path", "name", "is_leaf"],
                 "properties": {"path": {"type": "string"}, "name": {"type": "string"},
                                "is_leaf": {"type": "string", "enum": ["0", "1"]}}}}}},
        ],
    },
    "GraphiteExpand": {
        "type": "object",
        "required": ["results"],
        "properties": {"results": {
            "description": "Sorted paths; with groupByExpr=1, query -> sorted paths.",
            "oneOf": [{"type": "array", "items": {"type": "string"}},
                      {"type": "object",
                       "additionalProperties": {"type": "array", "items": {"type": "string"}}}],
        }},
    },
    "GraphiteTags": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
    "GraphiteFunctions": {
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "required": ["name", "description", "group", "params"],
            "properties": {
                "name": {"type": "string"}, "function": {"type": "string"},
                "description": {"type": "string"}, "module": {"type": "string"},
                "group": {"type": "string"},
                "params": {"type": "array", "items": {"type": "object"}},
            },
        },
    },
}


def package_version() -> str:
    try:
        return metadata.version("glowing-fiesta")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def openapi_document(config: HttpConfig, version: str | None = None) -> Json:
    max_age = config.retention_raw
    timestamp: Json = {
        "description": (
            "Epoch seconds (number or numeric string) or an ISO 8601 time (naive times are "
            f"UTC). Must lie within [now - {max_age} s, now + {FUTURE_TOLERANCE} s]; "
            "truncated to its second. Absent or null: now."
        ),
        "type": ["number", "string", "null"],
        "examples": [1764338400, "2026-11-28T14:00:00Z"],
    }
    metric_name: Json = {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME_LENGTH,
        "pattern": NAME_PATTERN,
        "description": "1-255 of A-Z a-z 0-9 _ - and '.', no leading, trailing or doubled '.'.",
        "examples": ["web.requests"],
    }
    value: Json = {"type": "number", "description": "A finite number."}
    iso_time: Json = {"type": "string", "format": "date-time",
                      "examples": ["2026-11-28T14:00:00Z"]}
    schemas: Json = {
        "MetricName": metric_name,
        "Timestamp": timestamp,
        "CounterPoint": {
            "type": "object",
            "additionalProperties": False,
            "required": ["metric"],
            "properties": {
                "metric": _ref("MetricName"),
                "value": {**value, "default": 1,
                          "description": "The increment; may be negative. Default 1."},
                "timestamp": _ref("Timestamp"),
            },
        },
        "ValuePoint": {
            "type": "object",
            "additionalProperties": False,
            "required": ["metric", "value"],
            "properties": {
                "metric": _ref("MetricName"),
                "value": value,
                "timestamp": _ref("Timestamp"),
            },
        },
        "BatchPoint": {
            "type": "object",
            "additionalProperties": False,
            "required": ["metric", "type"],
            "properties": {
                "metric": _ref("MetricName"),
                "type": {"type": "string", "enum": list(POINT_KINDS)},
                "value": {**value, "description":
                          "Required for values; for counters the increment, default 1."},
                "timestamp": _ref("Timestamp"),
            },
        },
        "Batch": {
            "type": "object",
            "additionalProperties": False,
            "required": ["points"],
            "properties": {
                "points": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH_POINTS,
                    "items": _ref("BatchPoint"),
                },
            },
        },
        "Accepted": {
            "type": "object",
            "required": ["accepted"],
            "properties": {"accepted": {"type": "integer", "minimum": 1,
                                        "description": "Points committed."}},
        },
        "MetricSummary": {
            "type": "object",
            "required": ["name", "kind", "created_at", "first_seen", "last_seen"],
            "properties": {
                "name": _ref("MetricName"),
                "kind": {"type": "string", "enum": list(KINDS)},
                "created_at": iso_time,
                "first_seen": {**iso_time, "type": ["string", "null"],
                               "description": "The oldest stored point (null: none)."},
                "last_seen": {**iso_time, "type": ["string", "null"],
                              "description": "The newest stored point (null: none)."},
            },
        },
        "MetricList": {
            "type": "object",
            "required": ["metrics", "next_cursor"],
            "properties": {
                "metrics": {"type": "array", "items": _ref("MetricSummary")},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "Pass as `cursor` for the next page; null on the last.",
                },
            },
        },
        "Series": {
            "type": "object",
            "required": ["metric", "kind", "interval", "aggregation", "fill", "from", "to",
                         "points"],
            "properties": {
                "metric": _ref("MetricName"),
                "kind": {"type": "string", "enum": list(KINDS)},
                "interval": {"type": "integer", "minimum": 1,
                             "description": "Bucket width in seconds."},
                "aggregation": _ref("Aggregation"),
                "fill": {"type": "string", "enum": list(FILLS)},
                "from": {**iso_time, "description": "Start of the first bucket."},
                "to": {**iso_time, "description": "End of the range (exclusive)."},
                "points": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["timestamp", "value"],
                        "properties": {
                            "timestamp": {**iso_time, "description": "The bucket's start."},
                            "value": {"type": ["number", "null"]},
                        },
                    },
                },
            },
        },
        "Aggregation": {
            "description": (
                "`sum`, `avg`, `min`, `max`, `count`, `rate` (counters, values, gauges; "
                "sets: `count`, `rate`); percentiles of values: `p50`, `p75`, `p90`, "
                "`p95`, `p99`, `p999` or any `pNN` / `pNN.N` (`p5` 5%, `p99.5` 99.5%, "
                "`p999` 99.9%, `p9999` 99.99%); `unique` (sets: distinct members); `last` "
                "(gauges: the last value of each bucket)."),
            "anyOf": [
                {"type": "string", "enum": [*AGGREGATIONS, *PERCENTILES, UNIQUE, LAST]},
                {"type": "string", "pattern": PERCENTILE_PATTERN},
            ],
        },
        "Histogram": {
            "type": "object",
            "required": ["metric", "from", "to", "count", "buckets"],
            "properties": {
                "metric": _ref("MetricName"),
                "from": {**iso_time, "description": "Start of the range, a whole minute."},
                "to": {**iso_time, "description": "End of the range (exclusive)."},
                "count": {"type": "number", "minimum": 0,
                          "description": "Samples in the range (sampled lines count "
                                         "1/rate)."},
                "buckets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["le", "count"],
                        "properties": {
                            "le": {"type": "number", "description": "The bound."},
                            "count": {"type": "number", "minimum": 0,
                                      "description": "Samples at most `le`."},
                        },
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "unavailable"]},
                "error": {"type": "string"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string", "enum": sorted(set(CODES.values()))},
                        "message": {"type": "string"},
                        "details": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["index", "field", "message"],
                                "properties": {
                                    "index": {"type": ["integer", "null"], "description":
                                              "The point's position in a batch, else null."},
                                    "field": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }
    headers: Json = {
        "X-RateLimit-Limit": {
            "description": "The key's bucket size (requests it may burst).",
            "schema": {"type": "integer", "minimum": 1},
        },
        "X-RateLimit-Remaining": {
            "description": "Requests left in the key's bucket (shared across processes "
                           "when Redis is used, as last seen by this process).",
            "schema": {"type": "integer", "minimum": 0},
        },
        "Retry-After": {
            "description": "Seconds until the key may send again.",
            "schema": {"type": "integer", "minimum": 1},
        },
    }
    interval_help = (
        "Bucket width: second, minute, hour, day or a count with s, m, h, d (10s, 5m, 1h, "
        f"1d); must divide a day or be whole days. At most {MAX_QUERY_BUCKETS} buckets."
    )
    paths: Json = {
        "/api/metrics/counter": _ingest(
            "Count an event",
            "Adds `value` (default 1) to the counter in the second of `timestamp`.",
            "CounterPoint", {"metric": "web.requests", "value": 1},
        ),
        "/api/metrics/value": _ingest(
            "Record a value",
            "Records one sample (count, sum, min, max) in the second of `timestamp`.",
            "ValuePoint", {"metric": "web.latency_ms", "value": 12.5},
        ),
        "/api/metrics/batch": _ingest(
            "Record up to 1000 points",
            "All or nothing: one invalid point and nothing is recorded (422).",
            "Batch", {"points": [
                {"metric": "web.requests", "type": "counter", "value": 3},
                {"metric": "web.latency_ms", "type": "value", "value": 12.5,
                 "timestamp": "2026-11-28T14:00:00Z"},
            ]},
        ),
        "/api/metrics": {
            "get": {
                "operationId": "listMetrics",
                "tags": ["query"],
                "summary": "List metrics",
                "description": "Metrics whose name starts with `prefix`, ordered by name.",
                "security": [{"ApiKey": []}],
                "parameters": [
                    {"name": "prefix", "in": "query", "required": False,
                     "schema": {"type": "string", "maxLength": MAX_NAME_LENGTH,
                                "pattern": r"^[A-Za-z0-9_.-]*$", "default": ""}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                "default": 100}},
                    {"name": "cursor", "in": "query", "required": False,
                     "description": "The `next_cursor` of the previous page (opaque).",
                     "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _ok("MetricList", "One page of metrics."),
                    "422": _error("Invalid or unknown parameter.", *_LIMIT_HEADERS),
                    **_guarded_errors("read"),
                },
            }
        },
        "/api/metrics/{name}": {
            "get": {
                "operationId": "getSeries",
                "tags": ["query"],
                "summary": "Aggregate a metric over time",
                "description": (
                    "Buckets of `interval` seconds aligned to epoch multiples (days at UTC "
                    "midnight) covering [from, to). Default range: the last hour. "
                    "Default aggregation: `sum` for counters, `avg` for values and "
                    "gauges, `unique` for sets. Default fill of empty buckets: 0 for "
                    "sum/count/rate, null otherwise. Percentiles (values), `unique` (sets) "
                    "and `last` (gauges) are read from per-minute sketches: the interval "
                    "must be a whole number of minutes, and a bucket whose points no sketch "
                    "holds (data from before sketches) is a 422, never a made-up number. "
                    "See docs/sketches.md. Every stored number is finite, but a coarse "
                    "bucket adds stored sums: one whose sum is beyond the double range "
                    "(+-1.8e308) is a 422 for sum, avg and rate, naming the bucket (a "
                    "shorter interval answers it)."
                ),
                "security": [{"ApiKey": []}],
                "parameters": [
                    {"name": "name", "in": "path", "required": True,
                     "schema": _ref("MetricName")},
                    {"name": "from", "in": "query", "required": False,
                     "description": "Start: ISO 8601 or epoch seconds. Default: `to` - 1 h.",
                     "schema": {"type": "string"}},
                    {"name": "to", "in": "query", "required": False,
                     "description": "End (exclusive): ISO 8601 or epoch seconds. Default: "
                                    "now (the current second included).",
                     "schema": {"type": "string"}},
                    {"name": "interval", "in": "query", "required": False,
                     "description": interval_help,
                     "schema": {"type": "string", "default": "minute",
                                "examples": ["minute", "10s", "5m", "1h", "1d"]}},
                    {"name": "aggregation", "in": "query", "required": False,
                     "schema": _ref("Aggregation")},
                    {"name": "fill", "in": "query", "required": False,
                     "schema": {"type": "string", "enum": list(FILLS)}},
                ],
                "responses": {
                    "200": _ok("Series", "One point per bucket."),
                    "404": _error("No such metric.", *_LIMIT_HEADERS),
                    "422": _error("Invalid or unknown parameter, more than "
                                  f"{MAX_QUERY_BUCKETS} buckets, an aggregation the "
                                  "metric's kind does not answer (the message lists those "
                                  "it does), an interval that is not whole minutes for a "
                                  "sketch aggregation, a bucket without sketches, or a "
                                  "bucket whose sum is beyond the double range.",
                                  *_LIMIT_HEADERS),
                    **_guarded_errors("read"),
                },
            }
        },
        "/api/metrics/{name}/histogram": {
            "get": {
                "operationId": "getHistogram",
                "tags": ["query"],
                "summary": "Count a value metric's samples under bounds (SLOs)",
                "description": (
                    "For each bound, the samples at most that bound over the whole range "
                    "[from, to), read from the merged sketches of its minutes (a sample "
                    "within the sketch accuracy of a bound may count on either side). "
                    "`from` is rounded down to its minute. Default range: the last hour. "
                    "A range whose points no sketch holds is a 422."
                ),
                "security": [{"ApiKey": []}],
                "parameters": [
                    {"name": "name", "in": "path", "required": True,
                     "schema": _ref("MetricName")},
                    {"name": "from", "in": "query", "required": False,
                     "description": "Start: ISO 8601 or epoch seconds. Default: `to` - 1 h.",
                     "schema": {"type": "string"}},
                    {"name": "to", "in": "query", "required": False,
                     "description": "End (exclusive): ISO 8601 or epoch seconds. Default: "
                                    "now.",
                     "schema": {"type": "string"}},
                    {"name": "buckets", "in": "query", "required": True,
                     "description": "1-50 finite bounds, strictly ascending, comma "
                                    "separated.",
                     "schema": {"type": "string", "examples": ["10,50,100,500"]}},
                ],
                "responses": {
                    "200": _ok("Histogram", "The count under each bound, and the total."),
                    "404": _error("No such metric.", *_LIMIT_HEADERS),
                    "422": _error("Invalid or unknown parameter, bad bounds, a metric that "
                                  "is not a value, or a range without sketches.",
                                  *_LIMIT_HEADERS),
                    **_guarded_errors("read"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "tags": ["service"],
                "summary": "Is the store answering?",
                "security": [],
                "responses": {
                    "200": {"description": "The store answers.",
                            "content": {"application/json": {"schema": _ref("Health")}}},
                    "503": {"description": "The store does not answer.",
                            "content": {"application/json": {"schema": _ref("Health")}}},
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "selfMetrics",
                "tags": ["service"],
                "summary": "Prometheus self-metrics",
                "security": [],
                "responses": {
                    "200": {"description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "tags": ["service"],
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {"description": "The OpenAPI 3.1 document.",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                },
            }
        },
    }
    paths.update(_stathat_paths(config))
    alert_paths, alert_schemas = _alert_paths()
    paths.update(alert_paths)
    schemas.update(alert_schemas)
    paths.update(_graphite_paths(config.graphite_max_series))
    schemas.update(_GRAPHITE_SCHEMAS)
    for item in paths.values():  # HTTP Basic auth (the key as password) is taken too
        for op in item.values():
            if op["security"] == [{"ApiKey": []}]:
                op["security"].append({"Basic": []})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Glowing Fiesta",
            "version": version or package_version(),
            "description": (
                "Metrics ingest and aggregate queries. Every `/api/` route except this "
                "document needs an `X-API-Key` (scope `write` to ingest, `read` to query, "
                "`admin` to change alert rules). "
                f"Request bodies are JSON, at most {config.max_body_size} bytes. Errors are "
                '`{"error": {"code", "message", "details": [{"index", "field", "message"}]}}`.'
                " Ingest answers 200 only once its points are committed. The Graphite read "
                "API (`/render`, `/metrics/find`, ...; tag `graphite`) needs a `read` key "
                "too; a key may also be sent as the password of HTTP Basic auth."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": "ingest"}, {"name": "query"}, {"name": "service"},
                 {"name": "stathat"}, {"name": "graphite"}, {"name": "alerts"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": headers,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "A token from `glowing-fiesta keys create`."},
                "Basic": {"type": "http", "scheme": "basic",
                          "description": "The same token as the password (any user name): "
                                         "Grafana's data source form sends it this way."},
            },
        },
    }


def _stathat_paths(config: HttpConfig) -> Json:
    """StatHat's ingest API (``query.stathat``): ``/ez``, ``/c``, ``/v``."""
    answer: Json = {
        "type": "object",
        "required": ["status", "msg"],
        "properties": {
            "status": {"type": "integer", "description":
                       "200 on success; 500 for an invalid key (StatHat's answer); "
                       "else the HTTP status."},
            "msg": {"type": "string", "examples": ["ok", "invalid keys"]},
        },
    }

    def response(description: str, *headers: str) -> Json:
        out: Json = {"description": description,
                     "content": {"application/json": {"schema": answer}}}
        if headers:
            out["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
        return out

    number: Json = {"type": "number"}
    t: Json = {"type": "integer", "description": (
        "Epoch seconds, within [now - retention, now + "
        f"{FUTURE_TOLERANCE} s] (retention: {config.retention_raw} s). Absent: now.")}
    stat: Json = {"type": "string", "minLength": 1, "maxLength": STATHAT_NAME_LENGTH,
                  "description": (
                      "A StatHat stat name. `prefix~a,b` posts to `prefix a` and `prefix b`. "
                      "Mapped to a metric name: letters, digits and `.` kept, a space to `_`, "
                      "any other character to `-` and two hex digits per UTF-8 byte.")}
    key: Json = {"type": "string", "description": "An API key with the `write` scope."}

    def fields(key_field: str, stat_field: str, numbers: tuple[str, ...]) -> Json:
        return {key_field: key, stat_field: stat, **{n: number for n in numbers}, "t": t}

    def form_schema(key_field: str, stat_field: str, numbers: tuple[str, ...],
                    required: list[str]) -> Json:
        return {"type": "object", "additionalProperties": False,
                "required": [key_field, stat_field, *required],
                "properties": fields(key_field, stat_field, numbers)}

    def responses(post: bool, json_body: bool) -> Json:
        out: Json = {
            "200": response("Committed (or spooled while the database is down).",
                            *_LIMIT_HEADERS),
            "401": response('No key, or not a key of ours: `{"status": 500, '
                            '"msg": "invalid keys"}`.'),
            "403": response("The key lacks the `write` scope.", *_LIMIT_HEADERS),
            "409": response("Kind conflict: the stat is stored as the other kind.",
                            *_LIMIT_HEADERS),
            "422": response("Invalid or unknown fields; `msg` says which. Nothing "
                            "recorded.", *_LIMIT_HEADERS),
            "429": response("The key's rate limit is exhausted.", "Retry-After",
                            *_LIMIT_HEADERS),
            "503": response("The store is unavailable (nothing was recorded).",
                            *_LIMIT_HEADERS),
        }
        if post:
            out["400"] = response("The body is malformed (JSON, or a form that is not "
                                  "UTF-8 or lacks its multipart boundary).")
            out["413"] = response("The body is larger than the limit.")
            out["415"] = response("The body is not a form" + (" or JSON." if json_body
                                                               else "."))
        return out

    def operation(method: str, op_id: str, summary: str, key_field: str, stat_field: str,
                  numbers: tuple[str, ...], required: list[str], *,
                  json_body: Json | None = None) -> Json:
        op: Json = {"operationId": op_id, "tags": ["stathat"], "summary": summary,
                    "security": [], "responses": responses(method == "post",
                                                           json_body is not None)}
        props = fields(key_field, stat_field, numbers)
        if method == "get":
            op["parameters"] = [
                {"name": name, "in": "query",
                 "required": name in (key_field, stat_field, *required), "schema": schema}
                for name, schema in props.items()
            ]
        else:
            content: Json = {"application/x-www-form-urlencoded": {
                "schema": form_schema(key_field, stat_field, numbers, required)}}
            if json_body is not None:
                content["application/json"] = {"schema": json_body}
            op["requestBody"] = {"required": True, "content": content}
        return op

    bulk: Json = {
        "type": "object", "additionalProperties": False, "required": ["ezkey", "data"],
        "properties": {
            "ezkey": key,
            "data": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_POINTS,
                     "items": {"type": "object", "additionalProperties": False,
                               "required": ["stat"],
                               "properties": {"stat": stat, "count": number,
                                              "value": number, "t": t}}},
        },
    }
    ez_numbers = ("count", "value")
    ez_summary = "StatHat EZ API: a count or a value for a stat, created on first use"
    return {
        "/ez": {
            "get": operation("get", "stathatEzGet", ez_summary, "ezkey", "stat",
                             ez_numbers, []),
            "post": operation("post", "stathatEzPost", ez_summary + " (or a JSON bulk)",
                              "ezkey", "stat", ez_numbers, [], json_body=bulk),
        },
        "/c": {
            method: operation(method, f"stathatCount{method.title()}",
                              "StatHat classic API: a count", "ukey", "key", ("count",),
                              ["count"])
            for method in ("get", "post")
        },
        "/v": {
            method: operation(method, f"stathatValue{method.title()}",
                              "StatHat classic API: a value", "ukey", "key", ("value",),
                              ["value"])
            for method in ("get", "post")
        },
    }


def _alert_paths() -> tuple[Json, Json]:
    """The alert-rule routes (``query.alerts``) and their schemas."""
    duration: Json = {"type": ["string", "integer"], "examples": ["5m", "30s", 300],
                      "pattern": r"^([0-9]{1,10}|[1-9][0-9]{0,9}[smhdw]|0[smhdw])$",
                      "minimum": 0,
                      "description": "A duration: 30s, 5m, 12h, 7d, or whole seconds."}
    targets: Json = {
        "type": "array", "minItems": 1, "maxItems": MAX_TARGETS,
        "items": {"oneOf": [
            {"type": "object", "additionalProperties": False,
             "required": ["webhook", "secret"],
             "properties": {
                 "webhook": {"type": "string", "maxLength": MAX_URL_LENGTH,
                             "pattern": r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$",
                             "examples": ["https://hooks.example.com/gf"],
                             "description": "An http(s) URL, POSTed the notification."},
                 "secret": {"type": "string", "minLength": 1, "maxLength": MAX_SECRET_LENGTH,
                            "description": "Signs each body (HMAC-SHA256 in "
                                           f"`{SIGNATURE_HEADER}`). Answered as "
                                           f"`{REDACTED}`; written back as such, kept."}}},
            {"type": "object", "additionalProperties": False, "required": ["email"],
             "properties": {"email": {"type": "string", "maxLength": MAX_EMAIL_LENGTH,
                                      "pattern": r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]+$",
                                      "examples": ["oncall@example.com"]}}},
        ]},
    }
    rule_name: Json = {"type": "string", "minLength": 1, "maxLength": MAX_RULE_NAME}
    metric: Json = {"type": "string", "maxLength": MAX_NAME_LENGTH,
                    "pattern": r"^[A-Za-z0-9_*-]+(\.[A-Za-z0-9_*-]+)*$",
                    "description": "A metric name, or a glob: `*` is any run of name "
                                   "characters within one segment (`app.*.errors`).",
                    "examples": ["app.errors", "app.*.errors"]}
    threshold_rule: Json = {
        "type": "object", "additionalProperties": False,
        "required": ["name", "metric", "window", "op", "threshold", "notify"],
        "properties": {
            "name": rule_name, "metric": metric,
            "aggregation": {"type": "string", "enum": list(AGGREGATIONS), "default": "sum"},
            "window": duration, "op": {"type": "string", "enum": list(OPS)},
            "threshold": {"type": "number"},
            "for": {**duration, "default": "0s",
                    "description": "How long the condition holds before it fires."},
            "notify": targets,
        },
    }
    missing_rule: Json = {
        "type": "object", "additionalProperties": False,
        "required": ["name", "metric", "absent_for", "notify"],
        "properties": {"name": rule_name, "metric": metric,
                       "absent_for": {**duration, "description": "Fires when no point has "
                                      "arrived for this long."},
                       "notify": targets},
    }
    state: Json = {"type": "string", "enum": ["ok", "pending", "firing"]}
    iso: Json = {"type": "string", "format": "date-time"}
    number_or_null: Json = {"type": ["number", "null"]}
    schemas: Json = {
        "AlertRule": {"oneOf": [threshold_rule, missing_rule],
                      "description": "A threshold rule, or a missing-data rule "
                                     "(with `absent_for`)."},
        "AlertRuleAnswer": {
            "type": "object",
            "required": ["id", "kind", "name", "metric", "notify", "created_at",
                         "updated_at", "state", "states"],
            "properties": {
                "id": {"type": "integer"},
                "kind": {"type": "string", "enum": ["threshold", "missing"]},
                "name": {"type": "string"}, "metric": {"type": "string"},
                "notify": {"type": "array"},
                "created_at": iso, "updated_at": iso,
                "state": {**state, "description": "The worst of `states`."},
                "states": {"type": "array", "items": {
                    "type": "object", "required": ["metric", "state", "since", "value"],
                    "properties": {"metric": {"type": "string"}, "state": state,
                                   "since": iso, "value": number_or_null}}},
            },
        },
        "AlertList": {
            "type": "object", "required": ["alerts", "next_cursor"],
            "properties": {"alerts": {"type": "array", "items": _ref("AlertRuleAnswer")},
                           "next_cursor": {"type": ["string", "null"]}},
        },
        "AlertHistory": {
            "type": "object", "required": ["id", "history", "next_cursor"],
            "properties": {
                "id": {"type": "integer"},
                "history": {"type": "array", "items": {
                    "type": "object",
                    "required": ["id", "metric", "from", "to", "time", "value"],
                    "properties": {"id": {"type": "integer"}, "metric": {"type": "string"},
                                   "from": state, "to": state, "time": iso,
                                   "value": number_or_null}}},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "AlertDeleted": {"type": "object", "required": ["id", "deleted"],
                         "properties": {"id": {"type": "integer"},
                                        "deleted": {"const": True}}},
    }
    rule_id: Json = {"name": "id", "in": "path", "required": True,
                     "schema": {"type": "integer", "minimum": 1}}
    page: list[Json] = [
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
        {"name": "cursor", "in": "query", "required": False,
         "description": "The `next_cursor` of the previous page.",
         "schema": {"type": "string"}},
    ]
    body: Json = {"required": True, "content": {"application/json": {
        "schema": _ref("AlertRule"),
        "example": {"name": "errors high", "metric": "app.errors", "aggregation": "sum",
                    "window": "5m", "op": ">", "threshold": 10, "for": "1m",
                    "notify": [{"webhook": "https://hooks.example.com/gf",
                                "secret": "change-me"}]}}}}
    bad_body = {
        "400": _error("The body is not well-formed JSON.", *_LIMIT_HEADERS),
        "413": _error("The body is larger than the limit.", *_LIMIT_HEADERS),
        "415": _error("The Content-Type is not application/json.", *_LIMIT_HEADERS),
        "422": _error("Invalid rule; `details` names each bad field (an unknown "
                      "aggregation, a bad duration, ...).", *_LIMIT_HEADERS),
    }
    no_rule = {"404": _error("No such rule.", *_LIMIT_HEADERS),
               "422": _error("The id is not a positive integer, or an invalid parameter.",
                             *_LIMIT_HEADERS)}

    def op(op_id: str, summary: str, scope: str, responses: Json, **more: Any) -> Json:
        return {"operationId": op_id, "tags": ["alerts"], "summary": summary,
                "security": [{"ApiKey": []}], **more,
                "responses": {**responses, **_guarded_errors(scope)}}

    paths: Json = {
        "/api/alerts": {
            "post": op("createAlert", "Create an alert rule", "admin", {
                "200": _ok("AlertRuleAnswer", "Created."),
                "409": _error(f"The database holds {MAX_RULES} rules already.",
                              *_LIMIT_HEADERS),
                **bad_body}, requestBody=body),
            "get": op("listAlerts", "List alert rules with their states", "read", {
                "200": _ok("AlertList", "One page of rules, by id."),
                "422": _error("Invalid or unknown parameter.", *_LIMIT_HEADERS)},
                parameters=page),
        },
        "/api/alerts/{id}": {
            "get": op("getAlert", "An alert rule and its states", "read", {
                "200": _ok("AlertRuleAnswer", "The rule."), **no_rule},
                parameters=[rule_id]),
            "put": op("replaceAlert", "Replace an alert rule", "admin", {
                "200": _ok("AlertRuleAnswer", "Replaced. Its states are kept unless its "
                           "metric changed."), **no_rule, **bad_body},
                parameters=[rule_id], requestBody=body),
            "delete": op("deleteAlert", "Delete an alert rule, its states and history",
                         "admin", {"200": _ok("AlertDeleted", "Deleted."), **no_rule},
                         parameters=[rule_id]),
        },
        "/api/alerts/{id}/history": {
            "get": op("alertHistory", "An alert rule's transitions, newest first", "read", {
                "200": _ok("AlertHistory", "One page of transitions."), **no_rule},
                parameters=[rule_id, *page]),
        },
    }
    return paths, schemas
