#!/usr/bin/env python3
"""Print the README's Configuration table from the CLI's own options.

    .venv/bin/python scripts/config_table.py

tests/test_docs.py holds the README against the same options, so they cannot drift.
"""

from __future__ import annotations

import click

from glowing_fiesta.cli import main


def options_by_command() -> dict[str, list[click.Option]]:
    """command path ("run", "keys create", ...) -> its options with a GF_ variable."""
    out: dict[str, list[click.Option]] = {}

    def walk(command: click.Command, path: str) -> None:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}".strip())
            return
        out[path] = [
            p for p in command.params
            if isinstance(p, click.Option) and isinstance(p.envvar, str)
        ]

    walk(main, "")
    return out


def table() -> str:
    seen: dict[str, tuple[click.Option, list[str]]] = {}
    for command, options in options_by_command().items():
        for option in options:
            entry = seen.setdefault(option.opts[0], (option, []))
            entry[1].append(command)
    lines = [
        "| option | environment | default | commands | meaning |",
        "|---|---|---|---|---|",
    ]
    for _flag, (option, commands) in sorted(seen.items()):
        flag = "/".join(option.opts + option.secondary_opts)
        default = option.default
        shown = "off" if default is False else "on" if default is True else default
        shown = "—" if shown is None else f"`{shown}`"
        help_text = (option.help or "").replace("|", "\\|")
        lines.append(
            f"| `{flag}` | `{option.envvar}` | {shown} | {', '.join(sorted(commands))} | "
            f"{help_text} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
