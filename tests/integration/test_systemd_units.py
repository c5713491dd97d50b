"""contrib/systemd: each template unit is valid for systemd, and its ExecStart is a command line
the installed commands accept, with the instance name as the identity.

``systemd-analyze verify`` runs on copies whose /usr/bin paths point at this environment's
commands (it checks that they exist); the command lines are parsed by the real click command
objects (``make_context``, so every option and value is checked, not just ``--help``) and, for
fedmsg-hub, by fedmsg's own argparse parser.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pytest

from gilmsg.testing import HUB_LOGGING, HUB_READY_LOG

REPO = Path(__file__).resolve().parents[2]
UNITS_DIR = REPO / "contrib" / "systemd"
UNITS = sorted(UNITS_DIR.glob("*@.service"))
INSTANCE = "example-identity"
BIN = Path(sys.executable).parent
#: What systemd substitutes for the specifiers these units use (system manager).
SPECIFIERS = {"i": INSTANCE, "I": INSTANCE, "S": "/var/lib", "C": "/var/cache", "%": "%"}


def directives(unit: Path) -> list[tuple[str, str]]:
    """(key, value) of every ``Key=value`` line, in order (keys may repeat)."""
    out = []
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.append((key.strip(), value.strip()))
    return out


def expand_specifiers(text: str) -> str:
    def sub(match: re.Match[str]) -> str:
        spec = match.group(1)
        assert spec in SPECIFIERS, f"specifier %{spec} not known to this test"
        return SPECIFIERS[spec]

    return re.sub(r"%(.)", sub, text)


def exec_argv(unit: Path) -> list[str]:
    """The unit's ExecStart as the argv systemd would run (defaults of Environment=)."""
    env: dict[str, str] = {}
    start = None
    for key, value in directives(unit):
        if key == "Environment":
            for word in shlex.split(value):
                name, _, val = word.partition("=")
                env[name] = expand_specifiers(val)
        elif key == "ExecStart":
            assert start is None, f"{unit.name}: more than one ExecStart"
            start = value
    assert start is not None, f"{unit.name}: no ExecStart"
    words = []
    for word in shlex.split(expand_specifiers(start)):
        # ${VAR} is one word; $VAR would split (these units only use the first form).
        assert not re.search(r"\$(?!\{)", word), f"{unit.name}: unbraced $ in {word!r}"
        words.append(re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word))
    return words


def click_command(script: str) -> click.Command:
    """The click command object behind an installed console script."""
    (entry,) = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == script]
    obj = entry.load()
    if isinstance(obj, click.Command):
        return obj
    module = sys.modules[entry.module]
    commands = [v for v in vars(module).values() if isinstance(v, click.Command)]
    assert len(commands) == 1, f"{script}: cannot tell which click command {entry.value} runs"
    return commands[0]


def parse_click(argv: list[str]) -> dict[str, Any]:
    """Parse argv with the real command (and sub-command); return all parameters by name.

    Raises click.UsageError (or another click exception) when the line does not parse."""
    prog = Path(argv[0]).name
    command = click_command(prog)
    ctx = command.make_context(prog, argv[1:])
    params = dict(ctx.params)
    if isinstance(command, click.Group):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, sub, sub_args = command.resolve_command(ctx, rest)
        assert sub is not None, f"{prog}: no sub-command in {argv}"
        sub_ctx = sub.make_context(name, sub_args, parent=ctx)
        params.update(sub_ctx.params, subcommand=name)
    return params


def parse_fedmsg_hub(argv: list[str]) -> dict[str, Any]:
    from fedmsg.commands.hub import HubCommand
    from fedmsg.config import build_parser

    parser = build_parser(HubCommand.extra_args, HubCommand.__doc__, prog="fedmsg-hub")
    parser.exit_on_error = False
    try:
        return vars(parser.parse_args(argv[1:]))
    except SystemExit as exc:  # argparse still exits on some errors
        raise AssertionError(f"fedmsg-hub does not accept {argv}") from exc


def test_every_long_running_command_has_a_unit():
    names = {u.name for u in UNITS}
    assert names == {"gilmsg-tail@.service", "gilmsg-outbox@.service",
                     "gilmsg-bridge@.service", "gilmsg-hub@.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_hardening_and_restart(unit):
    found = directives(unit)
    keys = dict(found)
    assert keys["Restart"] == "on-failure"
    assert keys["ProtectSystem"] == "strict"
    assert keys["NoNewPrivileges"] == "yes"
    assert keys["StateDirectory"] == "gilmsg/%i"
    # Stopped by SIGTERM, gilmsg commands exit 143: that must not count as a failure.
    assert "143" in keys["SuccessExitStatus"].split()


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_exec_start_parses_with_the_installed_command(unit):
    argv = exec_argv(unit)
    assert argv[0].startswith("/usr/bin/")
    prog = Path(argv[0]).name
    if prog == "fedmsg-hub":
        params = parse_fedmsg_hub(argv)
        assert params["config_filename"] == f"/etc/gilmsg/hub-{INSTANCE}.py"
        return
    params = parse_click(argv)
    assert params["name"] == INSTANCE  # the instance name is the identity
    state = f"/var/lib/gilmsg/{INSTANCE}/"
    if prog == "gilmsg-tail":
        assert params["exec_cmd"] == f"/usr/libexec/gilmsg/{INSTANCE}"
        assert params["dedup_file"].startswith(state)
        assert params["settle"] is True
    elif prog == "gilmsg-outbox":
        assert params["subcommand"] == "run"
        assert params["outbox"].startswith(state)
    elif prog == "gilmsg-bridge":
        assert params["config_a"] == f"/etc/gilmsg/bridge-{INSTANCE}/a.py"
        assert params["config_b"] == f"/etc/gilmsg/bridge-{INSTANCE}/b.py"
    else:
        raise AssertionError(f"{unit.name}: no check for {prog}")


def test_a_bad_exec_start_is_refused():
    """The parsing above can fail: an option the command does not have is a usage error."""
    with pytest.raises(click.UsageError):
        parse_click(["/usr/bin/gilmsg-tail", "--name", INSTANCE, "--no-such-option"])
    with pytest.raises(click.UsageError):
        parse_click(["/usr/bin/gilmsg-outbox", "run", "--name", INSTANCE, "--window", "soon"])


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path):
    for unit in UNITS:
        text = unit.read_text().replace("/usr/bin/", f"{BIN}/")
        (tmp_path / unit.name.replace("@", f"@{INSTANCE}")).write_text(text)
        (tmp_path / unit.name).write_text(text)  # the template the instance comes from
    instances = sorted(str(p) for p in tmp_path.glob(f"*@{INSTANCE}.service"))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *instances],
                         capture_output=True, text=True, timeout=60)
    # verify exits 0 on values it ignores; any line it prints is a problem in a unit.
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), (
        out.stdout + out.stderr)


def test_hub_instance_config_runs_a_hub(make_bus):
    """contrib/systemd/hub-instance.py as a real fedmsg-hub's config: it reads the bus from
    ./fedmsg.d, acknowledges as GILMSG_NAME, and the hub prints no pkg_resources warning."""
    pytest.importorskip("gilmsg_example", reason="the example consumer is not installed")
    bus = make_bus(["hub"])
    config = bus.root / "hub-instance.py"
    config.write_text((UNITS_DIR / "hub-instance.py").read_text()
                      + f"\nconfig['logging'] = {HUB_LOGGING!r}\n"
                      + "config['gilmsg_example'] = True\n"
                      + f"config['gilmsg_example.output'] = {str(bus.root / 'out.jsonl')!r}\n")
    env = {**bus.env(), "GILMSG_NAME": "hub", "GILMSG_STATE_DIR": str(bus.root)}
    env.pop("PYTHONWARNINGS", None)
    proc = bus.spawn([str(BIN / "fedmsg-hub"), "--config-filename", str(config)], env=env)
    proc.wait_for(lambda line: HUB_READY_LOG in line, timeout=60)
    proc.stop()
    proc.wait(10)
    identities = [line for line in proc.seen if " acknowledges as " in line]
    assert identities and all("(name 'hub'" in line for line in identities), proc.seen
    assert "pkg_resources" not in proc.stderr, proc.stderr
