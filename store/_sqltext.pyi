"""Types of store/_sqltext.c: the text of MySQL's multi-row point upserts."""

def statement(head: str, rows: list[tuple[int, int, float, float, float, float]],
              tail: str) -> str: ...
