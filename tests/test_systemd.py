"""The unit files: systemd accepts them, they keep their hardening, and every GF_
variable they or the example EnvironmentFile set is a real option that builds a valid
Config.

`systemd-analyze` comes with Debian's ``systemd`` package. The units run
/usr/local/bin/glowing-fiesta (docs/operations.md "Deployment"); `verify` wants that file
to exist, so it checks copies that run this environment's console script instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from glowing_fiesta.cli import build_config, main

ROOT = Path(__file__).resolve().parent.parent
UNITS = sorted((ROOT / "systemd").glob("*.service"))
ENV_EXAMPLE = ROOT / "systemd" / "glowing-fiesta.env.example"
INSTALLED = "/usr/local/bin/glowing-fiesta"
CLI = Path(sys.executable).parent / "glowing-fiesta"
COMMANDS = {"glowing-fiesta-collector.service": "collector",
            "glowing-fiesta-query.service": "serve"}


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        message = "systemd-analyze not found (Debian package: systemd)"
        if os.environ.get("GF_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def runnable_copies(tmp_path: Path) -> list[Path]:
    """The units with ExecStart= pointing at this environment's console script."""
    copies = []
    for unit in UNITS:
        text = unit.read_text()
        assert f"ExecStart={INSTALLED} " in text
        copy = tmp_path / unit.name
        copy.write_text(text.replace(INSTALLED, str(CLI)))
        copies.append(copy)
    return copies


def directives(unit: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys may repeat, as systemd allows."""
    found, section = [], ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def test_there_are_two_units() -> None:
    assert sorted(unit.name for unit in UNITS) == sorted(COMMANDS)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    copies = runnable_copies(tmp_path)
    result = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", *map(str, copies)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    # Unknown keys and bad values are warnings with exit status 0: fail on any message
    # about our units too.
    ours = [line for line in result.stderr.splitlines()
            if any(copy.name in line for copy in copies)]
    assert result.returncode == 0, result.stderr
    assert not ours, "\n".join(ours)


@pytest.mark.parametrize("unit", [unit.name for unit in UNITS])
def test_unit_hardening_keeps_exposure_low(unit: str, tmp_path: Path) -> None:
    """`systemd-analyze security` rates exposure 0-10; ours is about 1.2 ("OK")."""
    copy = next(c for c in runnable_copies(tmp_path) if c.name == unit)
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--threshold=20", "--no-pager",
         str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_unit_is_a_supervised_hardened_notify_service(unit: Path) -> None:
    found = directives(unit)
    service = {key: value for section, key, value in found if section == "Service"}
    assert service["ExecStart"] == f"{INSTALLED} {COMMANDS[unit.name]}"
    assert service["Type"] == "notify"
    assert service["WatchdogSec"]
    assert service["Restart"] == "on-failure"
    assert service["DynamicUser"] == "yes" and service["User"] == "glowing-fiesta"
    assert "glowing-fiesta" in service["StateDirectory"].split()
    for key, value in {
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == value, key
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert int(service["LimitNOFILE"]) >= 4096
    files = [value for section, key, value in found if key == "EnvironmentFile"]
    assert "-/etc/glowing-fiesta/glowing-fiesta.env" in files
    assert ("Install", "WantedBy", "multi-user.target") in found


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as systemd's EnvironmentFile= reads them (no quotes used here)."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def option_envvars(command: str) -> set[str]:
    cmd = main.get_command(click.Context(main), command)
    assert cmd is not None
    return {p.envvar for p in cmd.params if isinstance(p, click.Option) and isinstance(
        p.envvar, str)}


def test_every_gf_variable_mentioned_is_a_real_option() -> None:
    known = option_envvars("collector") | option_envvars("serve") | option_envvars("run")
    guide = ROOT / "docs" / "deployment.md"  # until it is merged into the README
    texts = [ENV_EXAMPLE.read_text(), *(unit.read_text() for unit in UNITS),
             guide.read_text() if guide.exists() else ""]
    mentioned = {name for text in texts for name in re.findall(r"\bGF_[A-Z_]+\b", text)}
    assert mentioned, "no GF_ variables found"
    assert mentioned <= known, f"not options: {sorted(mentioned - known)}"


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_unit_environment_and_example_build_a_valid_config(
    unit: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What systemd would hand the command (the unit's Environment= overridden by the
    example EnvironmentFile) parses and validates, as the CLI would do it."""
    for name in list(os.environ):
        if name.startswith("GF_"):
            monkeypatch.delenv(name)
    env = {}
    for section, key, value in directives(unit):
        if section == "Service" and key == "Environment":
            name, _, setting = value.partition("=")
            env[name] = setting.replace("%S", "/var/lib")
    env.update(read_env_file(ENV_EXAMPLE))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command = COMMANDS[unit.name]
    cmd = main.get_command(click.Context(main), command)
    assert cmd is not None
    ctx = cmd.make_context(command, [])
    config = build_config(ctx.params)
    assert config.database_url == env["GF_DATABASE_URL"]
    if command == "collector":
        assert ctx.params["admin_port"] == int(env["GF_ADMIN_PORT"])
        assert config.collector.state_dir == Path("/var/lib/glowing-fiesta/collector")
    else:
        assert config.http.host == env["GF_HTTP_HOST"]
