"""A database that refuses a row for good: a trigger on ``points_1s`` rejecting a marked
value, in SQLite and in MariaDB (a real permanent error, as a 1690 overflow is)."""

from __future__ import annotations

import sqlite3

from tests import mysqldirect

POISON = 666.0  # the trigger refuses a row whose sum is this


def refuse_poison(url: str) -> None:
    """Make the database itself refuse rows whose sum is POISON (a permanent error)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute(f"CREATE TRIGGER poison BEFORE INSERT ON points_1s WHEN NEW.sum = {POISON} "
                     "BEGIN SELECT RAISE(ABORT, 'poison row refused'); END")
        conn.commit()
        conn.close()
        return
    conn = mysqldirect.connect(url)
    with conn.cursor() as cursor:
        cursor.execute(f"CREATE TRIGGER poison BEFORE INSERT ON points_1s FOR EACH ROW BEGIN "
                       f"IF NEW.`sum` = {POISON} THEN SIGNAL SQLSTATE '45000' "
                       "SET MESSAGE_TEXT = 'poison row refused'; END IF; END")
    conn.close()


def accept_poison(url: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        conn.execute("DROP TRIGGER poison")
        conn.commit()
        conn.close()
        return
    conn = mysqldirect.connect(url)
    with conn.cursor() as cursor:
        cursor.execute("DROP TRIGGER poison")
    conn.close()
