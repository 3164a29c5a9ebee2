"""Reading ``deploy/compose.yaml`` the way ``docker compose`` does, as far as the deploy tests need.

The compose file is YAML with anchors and merge keys, ``${VAR:-default}`` interpolation, and
services in two shapes: Zonegate services built from ``deploy/Dockerfile`` (whose ENTRYPOINT is
``zonegate``) and services of other images. Helpers here interpolate with an empty environment
(the defaults a plain ``docker compose up`` uses), map container paths through a service's
mounts, and find every ``zonegate`` invocation a service runs, directly or through a mounted
shell script. The stack itself is read once, at import: ``COMPOSE``, ``SERVICES``, the
Dockerfile's ``IMAGE``, and the nodes by role with their settings (``CONTROL_PLANES``,
``DATA_PLANES``).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import typer
import yaml
from typer.main import get_command

from zonegate.cli import app
from zonegate.settings import ENV_PREFIX, Settings, SettingsError, load_settings

REPO: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = REPO / "deploy"
COMPOSE_FILE: Final = DEPLOY / "compose.yaml"
DOCKERFILE: Final = DEPLOY / "Dockerfile"
ZONEGATE: Final = Path(sys.executable).with_name("zonegate")

# ---- interpolation --------------------------------------------------------------------------------

_VARIABLE: Final = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
    ``${VAR:+other}`` and ``$$``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        value = environ.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            missing = not value if op == ":?" else value is None
            if missing:
                raise ValueError(f"${{{name}}} is required: {arg}")
            return value or ""
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _interpolated(node: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, list):
        return [_interpolated(item, environ) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(value, environ) for key, value in node.items()}
    return node


def load_compose(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{COMPOSE_FILE}: not a mapping"
    return dict(_interpolated(document, environ or {}))


# ---- the Dockerfile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    entrypoint: list[str]
    command: list[str]
    env: dict[str, str]


def read_dockerfile(path: Path = DOCKERFILE) -> Image:
    """ENTRYPOINT, CMD (JSON form) and ENV (KEY=VALUE form) of the last stage."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    stages = re.split(r"^FROM\s", text, flags=re.MULTILINE)
    last = stages[-1]
    entrypoint: list[str] = []
    command: list[str] = []
    env: dict[str, str] = {}
    for line in last.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENTRYPOINT":
            entrypoint = list(yaml.safe_load(rest))
        elif instruction == "CMD":
            command = list(yaml.safe_load(rest))
        elif instruction == "ENV":
            for item in shlex.split(rest):
                key, equals, value = item.partition("=")
                assert equals, f"{path}: ENV {item!r} is not KEY=VALUE"
                env[key] = value
    return Image(entrypoint, command, env)


# ---- services -------------------------------------------------------------------------------------


def builds_zonegate(service: Mapping[str, Any]) -> bool:
    build = service.get("build")
    if not isinstance(build, dict):
        return False
    context = (DEPLOY / str(build.get("context", "."))).resolve()
    return (context / str(build.get("dockerfile", "Dockerfile"))).resolve() == DOCKERFILE


def zonegate_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if builds_zonegate(svc)}


def environment(service: Mapping[str, Any]) -> dict[str, Any]:
    """The service's environment as compose reads it (map or KEY=VALUE list), values as given."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        out: dict[str, Any] = {}
        for item in raw:
            key, equals, value = str(item).partition("=")
            out[key] = value if equals else None
        return out
    return dict(raw)


def string_environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = environment(service)
    for key, value in env.items():
        # YAML 1.1 turns off/on/yes/no into booleans, which compose passes on as "false"/"true".
        assert isinstance(value, str | int | float) and not isinstance(value, bool), (
            f"environment {key}: {value!r} must be a string (quote it)"
        )
    return {key: str(value) for key, value in env.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))

    def host_path(self) -> Path:
        assert self.is_bind
        return (DEPLOY / self.source).resolve()


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    found: list[Mount] = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            found.append(Mount(str(entry["source"]), str(entry["target"]), bool(entry.get("read_only"))))
            continue
        parts = str(entry).split(":")
        assert 2 <= len(parts) <= 3, f"volume {entry!r}: expected SOURCE:TARGET[:MODE]"
        mode = parts[2] if len(parts) == 3 else "rw"
        found.append(Mount(parts[0], parts[1], "ro" in mode.split(",")))
    return found


def in_container(service: Mapping[str, Any], path: str) -> Mount | None:
    """The mount that holds ``path`` (the longest target that contains it)."""
    best: Mount | None = None
    for mount in mounts(service):
        if (path == mount.target or path.startswith(mount.target.rstrip("/") + "/")) and (
            best is None or len(mount.target) > len(best.target)
        ):
            best = mount
    return best


def argv(service: Mapping[str, Any], image: Image) -> list[str]:
    """What the container runs: compose's entrypoint/command rules over the image's."""
    entrypoint, command = service.get("entrypoint"), service.get("command")
    if isinstance(entrypoint, str):
        entrypoint = shlex.split(entrypoint)
    if isinstance(command, str):
        command = shlex.split(command)
    if entrypoint is not None:
        # Setting an entrypoint drops the image's CMD.
        return [*entrypoint, *(command or [])]
    return [*image.entrypoint, *(command if command is not None else image.command)]


def networks(service: Mapping[str, Any]) -> dict[str, list[str]]:
    """Network name -> the service's aliases on it."""
    raw = service.get("networks")
    if raw is None:
        return {} if service.get("network_mode") else {"default": []}
    if isinstance(raw, list):
        return {str(name): [] for name in raw}
    return {str(name): list((spec or {}).get("aliases") or []) for name, spec in raw.items()}


def resolves(compose: Mapping[str, Any], client: str, host: str) -> list[str]:
    """Services whose name or alias ``host`` is, on a network ``client`` is on."""
    mine = set(networks(compose["services"][client]))
    found: list[str] = []
    for name, service in compose["services"].items():
        for network, aliases in networks(service).items():
            if network in mine and host in (name, *aliases) and name not in found:
                found.append(name)
    return found


# ---- zonegate invocations ----------------------------------------------------------------------------

_SHELLS: Final = ("sh", "/bin/sh", "bash", "/bin/bash")
_PREFIXES: Final = frozenset({"if", "then", "else", "elif", "do", "while", "until", "exec", "!", "time"})


def _is_operator(token: str) -> bool:
    return bool(token) and all(char in "();<>|&" for char in token)


def shell_invocations(script: str, program: str = "zonegate") -> list[list[str]]:
    """Every simple command of ``script`` that runs ``program``, as argv (variables left as
    written, ``"$@"`` dropped). Enough shell for the scripts in deploy/scripts: one command per
    line or several joined by operators, case branches, ``$(...)``, redirections."""
    found: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        at_start, current = True, None
        for token in tokens:
            if current is not None:
                if _is_operator(token):
                    if token.startswith((">", "<")) and current[-1].isdigit():
                        current.pop()  # the fd of "2>&1"
                    found.append(current)
                    current = None
                    at_start = not token.startswith((">", "<"))
                elif token not in ("$@", "$*"):
                    current.append(token)
                continue
            if _is_operator(token):
                at_start = not token.startswith((">", "<"))
            elif at_start and token in _PREFIXES:
                at_start = True
            elif at_start and token == program:
                current = [token]
            else:
                at_start = False
        if current is not None:
            found.append(current)
    return found


def zonegate_invocations(service: Mapping[str, Any], image: Image) -> Iterator[tuple[str, list[str]]]:
    """(where, argv) for every ``zonegate`` command the service runs."""
    command = argv(service, image)
    if command and command[0] == "zonegate":
        yield "command", command
        return
    assert command and command[0] in _SHELLS, f"runs {command!r}: neither zonegate nor a shell script"
    if len(command) >= 3 and command[1] == "-c":
        for invocation in shell_invocations(command[2]):
            yield "inline script", invocation
        return
    script = command[1]
    mount = in_container(service, script)
    assert mount is not None and mount.is_bind and mount.target == script, (
        f"{script} is not a file mounted from the repository"
    )
    for invocation in shell_invocations(mount.host_path().read_text(encoding="utf-8")):
        yield str(mount.host_path().relative_to(REPO)), invocation


_ROOT: Final = get_command(app)


def check_invocation(argv: list[str]) -> str | None:
    """None when ``argv`` is a ``zonegate`` command line the CLI accepts, else why not."""
    assert argv[0] == "zonegate"
    command: Any = _ROOT
    args = list(argv[1:])
    path = ["zonegate"]
    context = _ROOT.make_context("zonegate", [], resilient_parsing=True)
    while hasattr(command, "get_command"):
        if not args:
            return f"{' '.join(path)} needs a subcommand"
        name = args.pop(0)
        sub = command.get_command(context, name)
        if sub is None:
            return f"{' '.join(path)} has no command {name!r}"
        if getattr(sub, "hidden", False):
            return f"{' '.join([*path, name])} is hidden: use the documented spelling"
        path.append(name)
        command = sub
        if hasattr(command, "get_command"):
            context = command.make_context(" ".join(path), [], parent=context, resilient_parsing=True)
    try:
        command.make_context(" ".join(path), args, parent=context)
    except typer.TyperException as exc:
        format_message = getattr(exc, "format_message", None)
        return f"{' '.join(argv)}: {format_message() if callable(format_message) else exc}"
    return None


# ---- the stack, read once -----------------------------------------------------------------------------

COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
ZONEGATE_SERVICES = zonegate_services(COMPOSE)
IMAGE = read_dockerfile()


def settings_of(name: str) -> Settings:
    """What ``zonegate`` in that container reads: the image's ZONEGATE_* ENV, then the service's."""
    image_env = {key: value for key, value in IMAGE.env.items() if key.startswith(ENV_PREFIX)}
    return load_settings(image_env | string_environment(SERVICES[name]))


def role_services(role: str) -> dict[str, Settings]:
    """The nodes (``zonegate start``) of a role. A service whose settings do not load is left out
    here, so that test_zonegate_services_settings_load reports it instead of an import error."""
    found = {}
    for name in ZONEGATE_SERVICES:
        if argv(SERVICES[name], IMAGE) == ["zonegate", "start"]:
            try:
                settings = settings_of(name)
            except (SettingsError, AssertionError):
                continue
            if settings.role == role:
                found[name] = settings
    return found


CONTROL_PLANES = role_services("control_plane")
DATA_PLANES = role_services("data_plane")
