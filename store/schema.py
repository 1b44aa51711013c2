"""Versioned migrations, one list per dialect, applied in order by ``db migrate``.

SQL is kept to what MySQL 8, MariaDB 10.6+, TiDB and Vitess all accept: no foreign
keys (distributed engines ignore or reject them), explicit primary keys on every table,
ascii_bin names so name order and equality are byte order everywhere.

A migration is a list of steps: SQL text, or a ``Step`` that the backend runs in Python
(a fill too large for one statement), or on MySQL a ``CreateTable`` (DDL commits at
once there: a migration interrupted after it must not fail on its second try).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from store.rollups import fill_groups_sql, upsert_assignments


class Step(NamedTuple):
    """A migration step each backend implements in Python, by name."""

    name: str


class CreateTable(NamedTuple):
    """``sql`` (a CREATE TABLE of ``table``) unless the table exists already."""

    table: str
    sql: str


# Migration 4's fill: sketch_1m and sketch_1h for the value data stored before them,
# for each minute whose every second has mn == mx (its sketch is exact), and each hour
# all of whose minutes are filled (store.rollups.MinuteFill).
FILL_SKETCHES: Final = Step("fill_sketches")
# Migration 2's fill of the groups of seconds whose sum SQL could overflow, after SQL
# filled all the others (store.rollups.FILL_SAFE_SQL): each summed by store.rollups.rollup.
FILL_OVERFLOWING_ROLLUPS: Final = Step("fill_overflowing_rollups")

MigrationStep = str | Step | CreateTable

SQLITE_MIGRATIONS: Final[list[tuple[int, list[MigrationStep]]]] = [
    (
        1,
        [
            """CREATE TABLE metrics (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                kind TEXT NOT NULL,
                created_at INTEGER NOT NULL)""",
            """CREATE TABLE points_1s (
                metric_id INTEGER NOT NULL,
                ts INTEGER NOT NULL,
                cnt REAL NOT NULL,
                `sum` REAL NOT NULL,
                mn REAL NOT NULL,
                mx REAL NOT NULL,
                PRIMARY KEY (metric_id, ts)) WITHOUT ROWID""",
            """CREATE TABLE api_keys (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                display_prefix TEXT NOT NULL,
                scopes TEXT NOT NULL,
                rate_limit TEXT,
                created_at INTEGER NOT NULL,
                revoked_at INTEGER)""",
            """CREATE TABLE flushes (
                writer_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                applied_at INTEGER NOT NULL,
                PRIMARY KEY (writer_id, seq)) WITHOUT ROWID""",
            "CREATE INDEX flushes_applied_at ON flushes (applied_at)",
        ],
    ),
    (
        2,  # rollups: points_1m and points_1h, filled from the per-second data
        [
            *(
                f"""CREATE TABLE {table} (
                metric_id INTEGER NOT NULL,
                ts INTEGER NOT NULL,
                cnt REAL NOT NULL,
                `sum` REAL NOT NULL,
                mn REAL NOT NULL,
                mx REAL NOT NULL,
                PRIMARY KEY (metric_id, ts)) WITHOUT ROWID"""
                for table in ("points_1m", "points_1h")
            ),
            *(
                f"INSERT INTO {table} (metric_id, ts, cnt, `sum`, mn, mx) "
                + fill_groups_sql(step, "/", safe=True)
                for table, step in (("points_1m", 60), ("points_1h", 3600))
            ),
            FILL_OVERFLOWING_ROLLUPS,
        ],
    ),
    (
        3,  # alerts: rules, per-(rule, metric) state, history, the notification outbox, lease
        [
            """CREATE TABLE alert_rules (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                metric TEXT NOT NULL,
                body TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL)""",
            """CREATE TABLE alert_states (
                rule_id INTEGER NOT NULL,
                metric TEXT NOT NULL,
                state TEXT NOT NULL,
                since REAL NOT NULL,
                value REAL,
                last_notified REAL,
                notified INTEGER NOT NULL,
                PRIMARY KEY (rule_id, metric)) WITHOUT ROWID""",
            """CREATE TABLE alert_transitions (
                id INTEGER PRIMARY KEY,
                rule_id INTEGER NOT NULL,
                metric TEXT NOT NULL,
                from_state TEXT NOT NULL,
                to_state TEXT NOT NULL,
                at REAL NOT NULL,
                value REAL)""",
            "CREATE INDEX alert_transitions_rule ON alert_transitions (rule_id, id)",
            """CREATE TABLE alert_outbox (
                id INTEGER PRIMARY KEY,
                rule_id INTEGER NOT NULL,
                metric TEXT NOT NULL,
                target TEXT NOT NULL,
                payload TEXT NOT NULL,
                idempotency_key TEXT NOT NULL UNIQUE,
                status TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                next_at REAL NOT NULL,
                created_at REAL NOT NULL,
                finished_at REAL,
                last_error TEXT)""",
            "CREATE INDEX alert_outbox_due ON alert_outbox (status, next_at)",
            """CREATE TABLE alert_lease (
                name TEXT NOT NULL PRIMARY KEY,
                holder TEXT NOT NULL,
                expires_at REAL NOT NULL) WITHOUT ROWID""",
        ],
    ),
    (
        4,  # summaries: one blob per metric-minute (-hour): sketch, HLL or last value
        [
            # A rowid table (its primary key a separate index), not WITHOUT ROWID like the
            # point tables: rows of 0.3-10 KB are past what SQLite advises for WITHOUT
            # ROWID (~1/20 of a page), and measured here with 1.5 KB rows it wrote 4x
            # slower and took 2.3x the file size (10 x 10,000 upserts: 12.6 s vs 2.6 s,
            # 456 MB vs 202 MB; read-modify-write 7.0 s vs 2.1 s).
            *(
                f"""CREATE TABLE {table} (
                metric_id INTEGER NOT NULL,
                ts INTEGER NOT NULL,
                data BLOB NOT NULL,
                PRIMARY KEY (metric_id, ts))"""
                for table in ("sketch_1m", "sketch_1h")
            ),
            FILL_SKETCHES,
        ],
    ),
]

MYSQL_MIGRATIONS: Final[list[tuple[int, list[MigrationStep]]]] = [
    (
        1,
        [
            """CREATE TABLE metrics (
                id BIGINT NOT NULL AUTO_INCREMENT,
                name VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                kind VARCHAR(8) CHARACTER SET ascii NOT NULL,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (id),
                UNIQUE KEY metrics_name (name)
            ) ENGINE=InnoDB""",
            """CREATE TABLE points_1s (
                metric_id BIGINT NOT NULL,
                ts BIGINT NOT NULL,
                cnt DOUBLE NOT NULL,
                `sum` DOUBLE NOT NULL,
                mn DOUBLE NOT NULL,
                mx DOUBLE NOT NULL,
                PRIMARY KEY (metric_id, ts)
            ) ENGINE=InnoDB""",
            """CREATE TABLE api_keys (
                id BIGINT NOT NULL AUTO_INCREMENT,
                name VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
                key_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                display_prefix VARCHAR(16) CHARACTER SET ascii NOT NULL,
                scopes VARCHAR(64) CHARACTER SET ascii NOT NULL,
                rate_limit VARCHAR(32) CHARACTER SET ascii NULL,
                created_at BIGINT NOT NULL,
                revoked_at BIGINT NULL,
                PRIMARY KEY (id),
                UNIQUE KEY api_keys_hash (key_hash)
            ) ENGINE=InnoDB""",
            """CREATE TABLE flushes (
                writer_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                seq BIGINT NOT NULL,
                applied_at BIGINT NOT NULL,
                PRIMARY KEY (writer_id, seq),
                KEY flushes_applied_at (applied_at)
            ) ENGINE=InnoDB""",
        ],
    ),
    (
        2,  # rollups: points_1m and points_1h, filled from the per-second data
        [
            *(
                f"""CREATE TABLE {table} (
                metric_id BIGINT NOT NULL,
                ts BIGINT NOT NULL,
                cnt DOUBLE NOT NULL,
                `sum` DOUBLE NOT NULL,
                mn DOUBLE NOT NULL,
                mx DOUBLE NOT NULL,
                PRIMARY KEY (metric_id, ts)
            ) ENGINE=InnoDB"""
                for table in ("points_1m", "points_1h")
            ),
            # Additive and guarded as a flush's upsert: a row a writer added between
            # CREATE and fill is merged into, never a failure.
            *(
                f"INSERT INTO {table} (metric_id, ts, cnt, `sum`, mn, mx) "
                + fill_groups_sql(step, "DIV", safe=True) + " ON DUPLICATE KEY UPDATE "
                + upsert_assignments("VALUES({})", "LEAST", "GREATEST")
                for table, step in (("points_1m", 60), ("points_1h", 3600))
            ),
            FILL_OVERFLOWING_ROLLUPS,
        ],
    ),
    (
        3,  # alerts: rules, per-(rule, metric) state, history, the notification outbox, lease
        [
            """CREATE TABLE alert_rules (
                id BIGINT NOT NULL AUTO_INCREMENT,
                name VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
                metric VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                body MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (id)
            ) ENGINE=InnoDB""",
            """CREATE TABLE alert_states (
                rule_id BIGINT NOT NULL,
                metric VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                state VARCHAR(8) CHARACTER SET ascii NOT NULL,
                since DOUBLE NOT NULL,
                value DOUBLE NULL,
                last_notified DOUBLE NULL,
                notified TINYINT NOT NULL,
                PRIMARY KEY (rule_id, metric)
            ) ENGINE=InnoDB""",
            """CREATE TABLE alert_transitions (
                id BIGINT NOT NULL AUTO_INCREMENT,
                rule_id BIGINT NOT NULL,
                metric VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                from_state VARCHAR(8) CHARACTER SET ascii NOT NULL,
                to_state VARCHAR(8) CHARACTER SET ascii NOT NULL,
                at DOUBLE NOT NULL,
                value DOUBLE NULL,
                PRIMARY KEY (id),
                KEY alert_transitions_rule (rule_id, id)
            ) ENGINE=InnoDB""",
            """CREATE TABLE alert_outbox (
                id BIGINT NOT NULL AUTO_INCREMENT,
                rule_id BIGINT NOT NULL,
                metric VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                target MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL,
                payload MEDIUMTEXT CHARACTER SET utf8mb4 NOT NULL,
                idempotency_key CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                status VARCHAR(8) CHARACTER SET ascii NOT NULL,
                attempts INT NOT NULL,
                next_at DOUBLE NOT NULL,
                created_at DOUBLE NOT NULL,
                finished_at DOUBLE NULL,
                last_error VARCHAR(500) CHARACTER SET utf8mb4 NULL,
                PRIMARY KEY (id),
                UNIQUE KEY alert_outbox_key (idempotency_key),
                KEY alert_outbox_due (status, next_at)
            ) ENGINE=InnoDB""",
            """CREATE TABLE alert_lease (
                name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                holder VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
                expires_at DOUBLE NOT NULL,
                PRIMARY KEY (name)
            ) ENGINE=InnoDB""",
        ],
    ),
    (
        4,  # summaries: one blob per metric-minute (-hour): sketch, HLL or last value
        [
            # MEDIUMBLOB: a set's HLL is up to ~10 KB, past BLOB's 64 KB never, but a
            # BLOB's limit is no place to find out. Re-run safe: CreateTable, and the
            # fill overwrites what an interrupted run wrote.
            *(
                CreateTable(table, f"""CREATE TABLE {table} (
                metric_id BIGINT NOT NULL,
                ts BIGINT NOT NULL,
                data MEDIUMBLOB NOT NULL,
                PRIMARY KEY (metric_id, ts)
            ) ENGINE=InnoDB""")
                for table in ("sketch_1m", "sketch_1h")
            ),
            FILL_SKETCHES,
        ],
    ),
]

LATEST_VERSION: Final = max(version for version, _ in SQLITE_MIGRATIONS)
assert max(version for version, _ in MYSQL_MIGRATIONS) == LATEST_VERSION
