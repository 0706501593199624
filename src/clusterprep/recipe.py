"""Recipes: a TOML file that says what a ready node looks like -> a validated `Recipe`.

`-r NAME` picks a built-in recipe (`recipes/NAME.toml`), `-r FILE` a file. Every key is checked:
an unknown key, a wrong type or a missing value is a `RecipeError` naming the file and the key.
Values may use placeholders, expanded once here: `{shared}`, `{env.name}`, `{env.prefix}`,
`{env.python}` (the env's interpreter), `{env.pip}` (that interpreter's pip), `{env.conda}`,
`{env.python_version}`, `{repo.path}`, `{repo.url}`, `{repo.rev}`, `{pins.NAME}`. A shell
`${VAR}` is left alone. The full reference is `docs/recipes.md`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from clusterprep import settings
from clusterprep.check.model import CheckSpec
from clusterprep.wandb import WandbSettings
from clusterprep.weights.spec import WeightsSpec
from clusterprep.errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_RECIPE = "opensora"
BACKENDS = ("conda", "venv")

# The schema: section -> key -> expected Python type. Tables marked FREE accept any key.
FREE = "free"
_SCHEMA: dict[str, dict[str, Any]] = {
    "recipe": {"name": str, "description": str},
    "shared": {"dir": str},
    "env": {
        "backend": str, "name": str, "python": str, "prefix": str, "base_prefix": str,
        "installer_url": str, "installer_sha256": str,
    },
    "shell": {"activate": bool, "export": FREE},
    "repo": {"url": str, "rev": str, "path": str},
    "pins": FREE,
    "install": {"commands": list},
    "checks": list,  # [[checks]]: an array of tables, see _CHECK_KEYS
    "wandb": {"project": str, "host": str},
    "weights": FREE,  # checked by WeightsSpec.from_table
}
_CHECK_KEYS = {"name": str, "command": str, "import": str, "value": str, "expect": str,
               "timeout": (int, float)}
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_.-]+)?)\}")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_COMMIT = re.compile(r"^[0-9a-f]{7,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Paths go into shell commands and ~/.bashrc unquoted by the user's install commands: keep them
# to characters no shell interprets.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./+@=,:-]*$")


@dataclass(frozen=True)
class EnvSpec:
    """The Python environment: `backend` conda or venv, at `prefix` (absolute, expanded)."""

    backend: str
    name: str
    python_version: str
    prefix: str
    base_prefix: str | None = None      # conda: where Miniconda is installed
    installer_url: str | None = None    # conda: the pinned Miniconda installer
    installer_sha256: str | None = None

    @property
    def python(self) -> str:
        return f"{self.prefix}/bin/python"

    @property
    def pip(self) -> str:
        return f"{self.python} -m pip"

    @property
    def conda(self) -> str | None:
        return f"{self.base_prefix}/bin/conda" if self.base_prefix else None


@dataclass(frozen=True)
class RepoSpec:
    url: str
    rev: str
    path: str


@dataclass(frozen=True)
class Recipe:
    """A validated recipe with every placeholder expanded."""

    source: str
    name: str
    shared_dir: str
    env: EnvSpec
    activate: bool
    exports: dict[str, str]
    repo: RepoSpec | None
    pins: dict[str, str]
    install_commands: list[str] = field(default_factory=list)
    checks: list[CheckSpec] = field(default_factory=list)
    wandb: WandbSettings = field(default_factory=WandbSettings)
    weights: WeightsSpec | None = None


def builtin_names() -> list[str]:
    folder = resources.files("clusterprep").joinpath("recipes")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def read_text(spec: str | None) -> tuple[str, str]:
    """The recipe's source label and TOML text: a built-in NAME or a FILE path."""
    spec = spec or DEFAULT_RECIPE
    if spec in builtin_names() and not Path(spec).exists():
        text = resources.files("clusterprep").joinpath(f"recipes/{spec}.toml").read_text("utf-8")
        return f"builtin:{spec}", text
    path = Path(spec)
    if not path.is_file():
        raise RecipeError(spec, None, "no such recipe file, and no built-in recipe of that name "
                          f"(built-ins: {', '.join(builtin_names())})")
    try:
        return str(path), path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(str(path), None, f"cannot read: {e}") from e


def load_recipe(spec: str | None = None, shared_dir: str | None = None) -> Recipe:
    """Read, check and expand a recipe.

    Args:
        spec: a built-in name or a file path; None for the default built-in.
        shared_dir: `--shared-dir`; else `$SHAREDDIR`; else the recipe's `[shared] dir`.

    Raises:
        RecipeError: the file, the key and what is wrong with it.
    """
    source, text = read_text(spec)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(source, None, f"not valid TOML: {e}") from e
    _check_schema(source, data)
    return _build(source, data, shared_dir or settings.shared_dir())


def _check_schema(source: str, data: dict[str, Any]) -> None:
    for section, value in data.items():
        if section not in _SCHEMA:
            raise RecipeError(source, section, f"unknown section (known: {', '.join(_SCHEMA)})")
        keys = _SCHEMA[section]
        if keys is list:
            _check_array_of_tables(source, section, value)
            continue
        if not isinstance(value, dict):
            raise RecipeError(source, section, "must be a table, as [section]")
        if keys is FREE:
            continue
        for key, item in value.items():
            if key not in keys:
                raise RecipeError(source, f"{section}.{key}",
                                  f"unknown key (known in [{section}]: {', '.join(keys)})")
            expected = keys[key]
            if expected is FREE:
                if not isinstance(item, dict):
                    raise RecipeError(source, f"{section}.{key}", "must be a table")
            elif not isinstance(item, expected):
                raise RecipeError(source, f"{section}.{key}",
                                  f"must be a {_type_name(expected)}, not {type(item).__name__}")


def _check_value_expression(source: str, where: str, table: dict[str, str]) -> None:
    """`value` is a Python expression over the imported module, so it needs `import`."""
    if "import" not in table:
        raise RecipeError(source, f"{where}.value", "needs `import`: it is evaluated after "
                          "the import, with the module's top-level package bound to its name")
    try:
        compile(table["value"], f"{where}.value", "eval")
    except SyntaxError as e:
        raise RecipeError(source, f"{where}.value",
                          f"not a Python expression: {e.msg}") from e


def _check_array_of_tables(source: str, section: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise RecipeError(source, section, f"must be an array of tables, as [[{section}]]")
    for i, table in enumerate(value):
        for key, item in table.items():
            where = f"{section}[{i}].{key}"
            if key not in _CHECK_KEYS:
                raise RecipeError(source, where, f"unknown key (known in [[{section}]]: "
                                  f"{', '.join(_CHECK_KEYS)})")
            expected = _CHECK_KEYS[key]
            if not isinstance(item, expected) or isinstance(item, bool):
                raise RecipeError(source, where, f"must be a {_type_name(expected)}, "
                                  f"not {type(item).__name__}")
            if key == "timeout" and item <= 0:
                raise RecipeError(source, where, "must be a number of seconds above 0")
        if "name" not in table:
            raise RecipeError(source, f"{section}[{i}].name", "is required")
        if ("command" in table) == ("import" in table):
            raise RecipeError(source, f"{section}[{i}]",
                              "needs exactly one of `command` or `import`")
        if "value" in table:
            _check_value_expression(source, f"{section}[{i}]", table)
        if "expect" in table:
            try:
                re.compile(table["expect"])
            except re.error as e:
                raise RecipeError(source, f"{section}[{i}].expect",
                                  f"not a regular expression: {e}") from e


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "string", bool: "boolean (true or false)", list: "list",
             (int, float): "number"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))


class _Expander:
    """Expands `{name}` placeholders from a growing table of known values."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.values: dict[str, str] = {}

    def __call__(self, key: str, text: str, regex: bool = False) -> str:
        """Expand `text`; with `regex`, values are escaped so that they match themselves."""
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.values:
                known = ", ".join("{" + k + "}" for k in self.values)
                raise RecipeError(self.source, key,
                                  f"unknown placeholder {{{name}}} (known here: {known})")
            return re.escape(self.values[name]) if regex else self.values[name]

        return _PLACEHOLDER.sub(one, text)


def _build(source: str, data: dict[str, Any], shared_override: str | None) -> Recipe:
    def get(section: str, key: str, default: Any = None) -> Any:
        return data.get(section, {}).get(key, default)

    def require(section: str, key: str) -> Any:
        value = get(section, key)
        if value in (None, ""):
            raise RecipeError(source, f"{section}.{key}", "is required")
        return value

    expand = _Expander(source)
    shared = shared_override or get("shared", "dir")
    if not shared:
        raise RecipeError(source, "shared.dir",
                          "no shared folder: set [shared] dir, $SHAREDDIR or --shared-dir")
    where = "shared.dir" if not shared_override else "--shared-dir/$SHAREDDIR"
    shared = _absolute(source, where, shared)
    expand.values["shared"] = shared

    pins = data.get("pins", {})
    for pin, version in pins.items():
        if not _PIN_NAME.match(pin) or not isinstance(version, str):
            raise RecipeError(source, f"pins.{pin}", "a pin is NAME = \"VERSION\" (a string)")
        expand.values[f"pins.{pin}"] = version

    backend = get("env", "backend", "venv")
    if backend not in BACKENDS:
        raise RecipeError(source, "env.backend", f"must be one of {', '.join(BACKENDS)}, "
                          f"not {backend!r}")
    name = require("env", "name")
    if not _ENV_NAME.match(name):
        raise RecipeError(source, "env.name", f"{name!r}: use letters, digits, '.', '_', '-'")
    python_version = require("env", "python")
    expand.values.update({"env.name": name, "env.python_version": python_version})
    base_prefix = url = sha256 = None
    if backend == "conda":
        base_prefix = _absolute(source, "env.base_prefix",
                                expand("env.base_prefix",
                                       get("env", "base_prefix", "{shared}/miniconda3")))
        url = expand("env.installer_url", require("env", "installer_url"))
        sha256 = require("env", "installer_sha256").lower()
        if not _SHA256.match(sha256):
            raise RecipeError(source, "env.installer_sha256", "must be 64 hex digits")
    else:
        for key in ("base_prefix", "installer_url", "installer_sha256"):
            if get("env", key) is not None:
                raise RecipeError(source, f"env.{key}", "only used with backend = \"conda\"")
    default_prefix = "{shared}/envs/{env.name}"
    prefix = _absolute(source, "env.prefix",
                       expand("env.prefix", get("env", "prefix", default_prefix)))
    env = EnvSpec(backend, name, python_version, prefix, base_prefix, url, sha256)
    expand.values.update({"env.prefix": prefix, "env.python": env.python, "env.pip": env.pip})
    if env.conda:
        expand.values["env.conda"] = env.conda

    repo = None
    if "repo" in data:
        url_ = expand("repo.url", require("repo", "url"))
        rev = require("repo", "rev").lower()
        if not _COMMIT.match(rev):
            raise RecipeError(source, "repo.rev",
                              f"{rev!r} is not a commit: pin a commit hash, not a branch or tag")
        default_path = "{shared}/" + _repo_folder(url_)
        path = _absolute(source, "repo.path", expand("repo.path", get("repo", "path",
                                                                         default_path)))
        repo = RepoSpec(url_, rev, path)
        expand.values.update({"repo.url": url_, "repo.rev": rev, "repo.path": path})

    exports = {}
    for variable, value in get("shell", "export", {"PYTHONNOUSERSITE": "True"}).items():
        if not _ENV_VAR.match(variable):
            raise RecipeError(source, f"shell.export.{variable}", "not a shell variable name")
        if not isinstance(value, str):
            raise RecipeError(source, f"shell.export.{variable}", "must be a string")
        exports[variable] = expand(f"shell.export.{variable}", value)

    commands = get("install", "commands", [])
    for i, command in enumerate(commands):
        if not isinstance(command, str):
            raise RecipeError(source, f"install.commands[{i}]", "must be a string")
    install = [expand(f"install.commands[{i}]", c) for i, c in enumerate(commands)]
    checks = [
        CheckSpec(
            name=table["name"],
            command=expand(f"checks[{i}].command", table["command"]) if "command" in table
            else None,
            module=table.get("import"),
            value=table.get("value"),
            timeout=table.get("timeout"),
            expect=expand(f"checks[{i}].expect", table["expect"], regex=True)
            if "expect" in table else None,
        )
        for i, table in enumerate(data.get("checks", []))
    ]
    return Recipe(
        source=source,
        name=get("recipe", "name", Path(source.removeprefix("builtin:")).stem),
        shared_dir=shared,
        env=env,
        activate=get("shell", "activate", True),
        exports=exports,
        repo=repo,
        pins=dict(pins),
        install_commands=install,
        checks=checks,
        wandb=WandbSettings.from_table(data.get("wandb", {}), source),
        weights=WeightsSpec.from_table(data.get("weights", {}), Path(shared), source,
                                     code=Path(repo.path) if repo else None),
    )


def _absolute(source: str, key: str, path: str) -> str:
    if not path.startswith("/"):
        raise RecipeError(source, key, f"{path!r} is relative: the same absolute path must "
                          "work on every node")
    if not _SAFE_PATH.match(path):
        raise RecipeError(source, key, f"{path!r}: use letters, digits and _ . / + @ = , : - "
                          "only (the path is used in shell commands)")
    return str(PurePosixPath(path))


def _repo_folder(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail.removesuffix(".git") or "repo"
