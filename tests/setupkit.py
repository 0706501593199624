"""What `up` tests stand on, built locally (no network): a wheelhouse, a git repository, a
Miniconda stand-in, and recipes that use them.

The stand-ins replace only what cannot be reached from here: PyPI (a one-wheel wheelhouse),
GitHub (a local repository) and repo.anaconda.com (an installer with Miniconda's command-line
contract: `-b -p PREFIX`, `PREFIX/bin/conda`, `PREFIX/etc/profile.d/conda.sh`, and a conda
whose shell hook activates an env as real conda does: PATH, CONDA_PREFIX, the env's
`etc/conda/activate.d` scripts, and a reactivation after `conda install`). clusterprep's own
code path is the real one: download through urllib, sha256, `bash installer -b -p`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

WHEEL_NAME = "hello_cp"
WHEEL_VERSION = "1.0"


def system_python_version() -> str:
    """The major.minor of the nodes' python3 (nodes see only the system PATH)."""
    out = subprocess.run(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % "
                          "sys.version_info[:2])"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def make_wheelhouse(folder: Path) -> Path:
    """A folder with one pure-Python wheel, `hello_cp 1.0`."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{WHEEL_NAME}-{WHEEL_VERSION}"
    files = {
        f"{WHEEL_NAME}/__init__.py": f"VERSION = {WHEEL_VERSION!r}\n",
        f"{dist}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: hello-cp\nVersion: {WHEEL_VERSION}\n",
        f"{dist}.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: setupkit\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr(f"{dist}.dist-info/RECORD", record)
    return folder


def make_git_repo(folder: Path) -> str:
    """A git repository with two commits; returns the first commit (the pinned one)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    folder.mkdir(parents=True)
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (folder / "README").write_text("pinned\n")
    git("add", "README")
    git("commit", "-qm", "pinned")
    pinned = git("rev-parse", "HEAD")
    (folder / "README").write_text("later\n")
    git("commit", "-qam", "later")
    return pinned


FAKE_MINICONDA = r"""#!/bin/bash
# Test stand-in for Miniconda3-*-Linux-x86_64.sh: the same command line (-b -p PREFIX [-u]),
# and a conda that keeps real conda's contract for what clusterprep relies on (see below).
set -e
prefix=""; batch=0
while [ $# -gt 0 ]; do
    case "$1" in
        -b) batch=1 ;;
        -u) ;;
        -p) prefix="$2"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ "$batch" = 1 ] && [ -n "$prefix" ] || { echo "usage: -b -p PREFIX" >&2; exit 2; }
echo "PREFIX=$prefix"
mkdir -p "$prefix/bin" "$prefix/condabin" "$prefix/etc/profile.d" "$prefix/conda-meta"
cat > "$prefix/bin/conda" <<'CONDA'
#!/bin/bash
# conda's command line, as far as clusterprep and its tests use it:
#   create -y -p PREFIX python=X.Y   an env (a venv of the system python stands in), with the
#                                    conda-meta/ folder that makes a folder a conda env
#   install [-y] [-p P | -n N] [-c CHANNEL]... SPEC...   into P, else N, else the ACTIVE env
#                                    ($CONDA_PREFIX), else base; records conda-meta/NAME-*.json
#   shell.posix activate|reactivate|deactivate   the shell code the `conda` function evals:
#                                    PATH and CONDA_* set, and the env's etc/conda/activate.d/
#                                    *.sh sourced (deactivate.d/*.sh on the way out)
base="$(cd "$(dirname "$0")/.." && pwd)"
env_path() {  # a conda env by name or path, as conda resolves it
    case "$1" in
        ""|base) echo "$base" ;;
        */*) echo "$1" ;;
        *) echo "$base/envs/$1" ;;
    esac
}
sourced() {  # shell lines that source the env's activate.d or deactivate.d scripts, in order
    for script in "$1"/etc/conda/"$2".d/*.sh; do
        [ -f "$script" ] && printf '. "%s"\n' "$script"
    done
    return 0
}
without() {  # PATH without one folder
    printf '%s' ":$PATH:" | sed "s#:$1:#:#g; s#^:##; s#:\$##"
}
case "$1" in
    --version) echo "conda 24.5.0" ;;
    create)
        shift; target=""
        while [ $# -gt 0 ]; do
            case "$1" in -p) target="$2"; shift ;; -n) target="$(env_path "$2")"; shift ;; esac
            shift
        done
        /usr/bin/python3 -m venv "$target"
        mkdir -p "$target/conda-meta"
        echo "==> cmd: conda create" > "$target/conda-meta/history" ;;
    install)
        shift; target="${CONDA_PREFIX:-$base}"; specs=()
        while [ $# -gt 0 ]; do
            case "$1" in
                -p) target="$2"; shift ;;
                -n) target="$(env_path "$2")"; shift ;;
                -c) shift ;;
                -y) ;;
                *) specs+=("$1") ;;
            esac
            shift
        done
        [ -d "$target/conda-meta" ] || { echo "EnvironmentLocationNotFound: $target" >&2; exit 1; }
        for spec in "${specs[@]}"; do
            name="${spec%%[=<>]*}"; version="${spec#"$name"}"; version="${version##*=}"
            printf '{"name": "%s", "version": "%s"}\n' "$name" "${version:-0}" \
                > "$target/conda-meta/$name-${version:-0}-fake_0.json"
            echo "installed $name ${version:-0} into $target"
        done ;;
    shell.posix)
        case "$2" in
            activate)
                target="$(env_path "$3")"
                [ -d "$target/conda-meta" ] || {
                    echo "EnvironmentLocationNotFound: Not a conda environment: $target" >&2
                    exit 1; }
                path="$PATH"
                if [ -n "$CONDA_PREFIX" ]; then
                    sourced "$CONDA_PREFIX" deactivate
                    path="$(without "$CONDA_PREFIX/bin")"
                fi
                printf "export PATH='%s'\n" "$target/bin:$path"
                printf "export CONDA_PREFIX='%s'\n" "$target"
                printf "export CONDA_DEFAULT_ENV='%s'\n" "$target"
                printf "export CONDA_SHLVL='%s'\n" "$(( ${CONDA_SHLVL:-0} + 1 ))"
                sourced "$target" activate ;;
            reactivate)
                [ -z "$CONDA_PREFIX" ] && exit 0
                sourced "$CONDA_PREFIX" deactivate
                sourced "$CONDA_PREFIX" activate ;;
            deactivate)
                [ -z "$CONDA_PREFIX" ] && exit 0
                sourced "$CONDA_PREFIX" deactivate
                printf "export PATH='%s'\n" "$(without "$CONDA_PREFIX/bin")"
                echo "unset CONDA_PREFIX CONDA_DEFAULT_ENV"
                echo "export CONDA_SHLVL='0'" ;;
        esac ;;
    *) echo "fake conda: $1 not supported" >&2; exit 2 ;;
esac
CONDA
chmod +x "$prefix/bin/conda"
ln -sf ../bin/conda "$prefix/condabin/conda"
# The shell hook: a `conda` function that evals `conda shell.posix ...` for activate and
# deactivate, and reactivates the active env after install/remove (so the activate.d scripts
# of what was just installed run), as real conda's etc/profile.d/conda.sh does.
cat > "$prefix/etc/profile.d/conda.sh" <<SH
export CONDA_EXE='$prefix/bin/conda'
__conda_exe() { "\$CONDA_EXE" "\$@"; }
__conda_eval() {
    local ask_conda
    ask_conda="\$(__conda_exe shell.posix "\$@")" || return
    eval "\$ask_conda"
    hash -r
}
conda() {
    case "\${1-}" in
        activate|deactivate) __conda_eval "\$@" ;;
        install|update|upgrade|remove|uninstall)
            __conda_exe "\$@" || return
            __conda_eval reactivate ;;
        *) __conda_exe "\$@" ;;
    esac
}
if [ -z "\${CONDA_SHLVL+x}" ]; then
    export CONDA_SHLVL=0
    export PATH="$prefix/condabin\${PATH:+:\$PATH}"
fi
SH
echo "installation finished."
"""


def make_fake_miniconda(folder: Path) -> tuple[str, str]:
    """The stand-in installer; returns its file:// URL and its sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    installer = folder / "Miniconda3-test-Linux-x86_64.sh"
    installer.write_text(FAKE_MINICONDA)
    return installer.as_uri(), hashlib.sha256(installer.read_bytes()).hexdigest()


def venv_recipe(path: Path, shared: Path | str, repo: Path, rev: str, wheelhouse: Path,
                extra_commands: tuple[str, ...] = ()) -> Path:
    commands = [f"{{env.pip}} install --no-index --find-links {wheelhouse} "
                f"hello-cp=={{pins.hello-cp}}", *extra_commands]
    path.write_text(f"""
[shared]
dir = "{shared}"

[env]
backend = "venv"
name = "demo"
python = "{system_python_version()}"

[repo]
url = "{repo}"
rev = "{rev}"

[pins]
hello-cp = "{WHEEL_VERSION}"

[install]
commands = {commands!r}
""".replace("'", '"'))
    return path


def env_recipe(path: Path, shared: Path, backend: str, tail: str = "",
               installer: tuple[str, str] | None = None) -> Path:
    """A recipe without [repo] for `backend` ("venv", or "conda" with `installer`, a URL and
    its sha256), with `tail` (more TOML: [pins], [install], [[checks]]) at its end."""
    conda = ""
    if installer is not None:
        conda = f'installer_url = "{installer[0]}"\ninstaller_sha256 = "{installer[1]}"\n'
    path.write_text(f"""
[shared]
dir = "{shared}"

[env]
backend = "{backend}"
name = "demo"
python = "{system_python_version()}"
{conda}
{tail}""")
    return path


def conda_recipe(path: Path, shared: Path, url: str, sha256: str) -> Path:
    return env_recipe(path, shared, "conda", installer=(url, sha256))


def install_fake_distribution(site_packages: Path, name: str, version: str) -> None:
    """Put distribution `name` `version` (a module plus its dist-info) into a site folder, the
    way pip would leave it: enough for imports and importlib.metadata to find it."""
    module = name.replace("-", "_")
    site_packages.mkdir(parents=True, exist_ok=True)
    (site_packages / f"{module}.py").write_text(f"VERSION = {version!r}\n")
    info = site_packages / f"{module}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{module}.py,,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    (info / "top_level.txt").write_text(f"{module}\n")


def install_fake_torch(site_packages: Path, gpus: int = 8) -> None:
    """A `torch` with the API surface `check` asks (version, CUDA, cuDNN, NCCL, GPUs), for a
    node with `gpus` GPUs (fewer where CUDA_VISIBLE_DEVICES says so, as torch's own count),
    which logs each import to ~/torch-imports. Stands in for torch
    (700 MB, and nothing here has a GPU); clusterprep's code path is the real one."""
    install_fake_distribution(site_packages, "torch", "2.2.2+cu121")
    (site_packages / "torch.py").unlink()
    package = site_packages / "torch"
    (package / "cuda").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import os\n"
        "with open(os.path.expanduser('~/torch-imports'), 'a') as log:\n"
        "    log.write('%d\\n' % os.getpid())\n"
        "__version__ = '2.2.2+cu121'\n"
        "from torch import backends, cuda, version\n")
    (package / "version.py").write_text("cuda = '12.1'\n")
    (package / "backends.py").write_text(
        "class cudnn:\n    @staticmethod\n    def version():\n        return 8902\n")
    (package / "cuda" / "__init__.py").write_text(
        "import os\n"
        "from torch.cuda import nccl\n"
        "def device_count():\n"
        "    visible = os.environ.get('CUDA_VISIBLE_DEVICES')\n"
        f"    return {gpus} if visible is None else len([d for d in visible.split(',') if d])\n"
        "def get_device_name(index):\n"
        "    if index >= device_count():\n        raise RuntimeError('invalid device ordinal')\n"
        "    return 'NVIDIA H100 80GB HBM3'\n")
    (package / "cuda" / "nccl.py").write_text("def version():\n    return (2, 19, 3)\n")


def add_to_bashrc(home: Path, line: str) -> None:
    """Add a line to a node's ~/.bashrc where non-interactive ssh commands see it: before the
    Debian interactive guard (`case $- in`)."""
    bashrc = home / ".bashrc"
    text = bashrc.read_text()
    guard = text.index("case $- in")
    bashrc.write_text(text[:guard] + line + "\n" + text[guard:])


def make_bare_venv(prefix: Path) -> None:
    """A venv of the nodes' system python, without pip (fast, no network)."""
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(prefix)], check=True)


def make_base_python(prefix: Path) -> Path:
    """A Python installed at `prefix` the way conda installs one (a base interpreter, not a
    venv): it honours user site-packages, which come BEFORE its own site folder on sys.path.
    Made from the nodes' system python: its binary copied, its standard library linked.
    Returns the interpreter's own site folder."""
    version = system_python_version()
    (prefix / "bin").mkdir(parents=True)
    shutil.copy2(f"/usr/bin/python{version}", prefix / "bin" / "python")
    stdlib = prefix / "lib" / f"python{version}"
    stdlib.mkdir(parents=True)
    for entry in Path(f"/usr/lib/python{version}").iterdir():
        (stdlib / entry.name).symlink_to(entry)
    site = stdlib / "dist-packages"  # Debian's python names its site folders so
    site.mkdir()
    return site
