"""How a config field is offered on the command line: pure data, no click.

A config dataclass field declares its option next to its default::

    udp_port: int | None = field(default=8125, metadata=cli(
        "--udp-port", "UDP port for StatsD lines; 0 binds an ephemeral port.", min=0, max=65535))

``glowing_fiesta.cli`` turns that into a click option (GF_ + the option's name as its
environment variable, the field's default as the option's default) and builds the
config back from the parsed options. It lives in this bottom layer so that collector/
and query/ can declare their options without importing click or each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEY = "cli"  # the key of a field's metadata that holds its CliOption


@dataclass(frozen=True, slots=True)
class CliOption:
    flag: str  # "--udp-port", or "--require-key/--no-require-key" for an on/off pair
    help: str
    min: float | None = None  # inclusive bounds, checked by click
    max: float | None = None
    duration: bool = False  # seconds in the field, "7d" on the command line
    choices: tuple[str, ...] = ()
    existing_file: bool = False  # a Path that must name an existing file
    # The option has no default of its own: it takes another option's value, which the
    # CLI copies in (e.g. --http-host: "--host"). Its click default is None.
    default_from: str | None = None

    @property
    def name(self) -> str:
        """``--udp-port`` -> ``udp_port``: the click parameter name."""
        return self.flag.split("/")[0].lstrip("-").replace("-", "_")

    @property
    def envvar(self) -> str:
        return "GF_" + self.name.upper()


def cli(flag: str, help: str, **spec: Any) -> Mapping[str, CliOption]:
    """The ``metadata=`` of a dataclass field offered as ``flag`` (see CliOption)."""
    return {KEY: CliOption(flag, help, **spec)}
