"""Probe: everything about a node that changes what training code runs or how nodes talk.

Runs on the node under the env's Python (stdlib only, Python 3.8+). Input on stdin (JSON):
    {"shared": "/abs/shared/dir" | null, "checks": [{"name", "command" | "import", "expect"}]}
Output: a first line {"clock": <node time>} printed at once (the head times its arrival to
measure the clock offset), then one JSON object with the fingerprint and the check results.
"""

import hashlib
import json
import os
import platform
import re
import resource
import shutil
import site
import subprocess
import sys
import time

print(json.dumps({"clock": time.time()}), flush=True)

SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
ENV_PREFIXES = ("NCCL_", "CUDA_", "LD_", "PYTHON", "HF_", "WANDB_", "TORCH_")
ENV_NAMES = ("OMP_NUM_THREADS", "PATH")


def run(argv, timeout=60):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    return done.returncode, (done.stdout + done.stderr).strip()


def environment():
    found = {}
    for name, value in os.environ.items():
        if name.startswith(ENV_PREFIXES) or name in ENV_NAMES:
            if SECRET.search(name):  # never report a secret, only that it is set (and which)
                value = "<secret sha256:%s>" % hashlib.sha256(value.encode()).hexdigest()[:8]
            found[name] = value
    return found


def inside(path, prefix):
    path, prefix = os.path.realpath(path), os.path.realpath(prefix)
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def distributions():
    """Installed distributions as imports see them: the first one on sys.path wins.

    Reads the metadata headers directly (importlib.metadata's email parser costs tens of
    milliseconds per hundred packages, on every node)."""
    packages, shadowed = {}, []
    for entry in sys.path:
        try:
            names = sorted(os.listdir(entry or "."))
        except OSError:
            continue
        for folder in names:
            if not folder.endswith((".dist-info", ".egg-info")):
                continue
            info = os.path.join(entry or ".", folder)
            name, version = header(info)
            if not name:
                continue
            name = re.sub(r"[-_.]+", "-", name).lower()
            if name in packages:
                continue
            location = os.path.abspath(entry or ".")
            found = {"version": version, "location": location}
            record = read_bytes(os.path.join(info, "RECORD"))
            if record and (b".so," in record or b".pyd," in record):  # compiled: which build?
                found["build"] = hashlib.sha256(record).hexdigest()[:16]
            packages[name] = found
            if not inside(location, sys.prefix) and not inside(location, sys.base_prefix):
                shadowed.append({"package": name, "version": version, "location": location,
                                 "via": origin(location)})
    return packages, shadowed


def header(info):
    """(Name, Version) from a dist-info METADATA or an egg-info PKG-INFO."""
    for filename in ("METADATA", "PKG-INFO"):
        path = os.path.join(info, filename) if os.path.isdir(info) else info
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                fields = {}
                for line in f:
                    if not line.strip():
                        break
                    key, _, value = line.partition(":")
                    if key in ("Name", "Version") and key not in fields:
                        fields[key] = value.strip()
                return fields.get("Name"), fields.get("Version")
        except OSError:
            continue
    return None, None


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def origin(location):
    user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else ""
    if user_site and inside(location, user_site):
        return "user site-packages"
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and inside(location, entry):
            return "PYTHONPATH"
    return "a .pth file or other sys.path entry"


def torch_facts():
    try:
        import torch  # noqa: the point is to see what this env's torch says
    except Exception as e:  # not installed, or broken: both are facts
        return {"error": "%s: %s" % (type(e).__name__, e)}
    facts = {"version": torch.__version__, "cuda": torch.version.cuda}
    try:
        facts["cudnn"] = torch.backends.cudnn.version()
    except Exception:
        facts["cudnn"] = None
    try:
        facts["nccl"] = ".".join(str(p) for p in torch.cuda.nccl.version())
    except Exception:
        facts["nccl"] = None
    try:
        facts["gpus"] = torch.cuda.device_count()
    except Exception:
        facts["gpus"] = 0
    return facts


def nvcc():
    path = shutil.which("nvcc") or os.path.join(sys.prefix, "bin", "nvcc")
    if not os.path.exists(path):
        return None
    status, output = run([path, "--version"])
    match = re.search(r"release ([\d.]+)", output or "")
    return match.group(1) if match else output


def gpus():
    if shutil.which("nvidia-smi") is None:
        return {"count": 0, "models": [], "driver": None}
    status, output = run(["nvidia-smi", "--query-gpu=name,driver_version",
                          "--format=csv,noheader"])
    if status != 0:
        return {"count": 0, "models": [], "driver": None, "error": output[-300:]}
    rows = [line.split(",") for line in output.splitlines() if line.strip()]
    return {"count": len(rows), "models": sorted({r[0].strip() for r in rows}),
            "driver": rows[0][1].strip() if rows and len(rows[0]) > 1 else None}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def free_bytes(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        stats = os.statvfs(path or "/")
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def hf_cache():
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


# Imports each module named, and prints one JSON line per module: its version (`__version__`,
# else its distribution's) or why it failed to import.
IMPORT_VERSIONS = """
import importlib, json, sys
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
    except BaseException as e:
        print(json.dumps({"name": name, "error": "%s: %s" % (type(e).__name__, e)}), flush=True)
        continue
    version = getattr(module, "__version__", None)
    if not isinstance(version, str):
        try:
            from importlib import metadata
            top = name.split(".")[0]
            names = getattr(metadata, "packages_distributions", dict)().get(top, [top])
            version = metadata.version(names[0])
        except Exception:
            version = ""
    print(json.dumps({"name": name, "version": version}), flush=True)
"""


def import_versions(modules):
    """{module: {"version"} or {"error"}}, importing every module in ONE fresh interpreter
    (torch and what builds on it load once, not once per check). An import that takes that
    interpreter down loses only itself: the modules it left unanswered run one by one."""
    modules = list(dict.fromkeys(modules))
    answers = _imported(modules) if modules else {}
    for module in modules:
        if module not in answers:
            answers.update(_imported([module]))
    return answers


def _imported(modules):
    try:
        done = subprocess.run([sys.executable, "-c", IMPORT_VERSIONS] + modules,
                              capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {modules[0]: {"error": str(e)}} if len(modules) == 1 else {}
    answers = {}
    for line in done.stdout.splitlines():
        try:
            answer = json.loads(line)
            answers[answer.pop("name")] = answer
        except (ValueError, KeyError, AttributeError):
            continue
    if len(modules) == 1 and modules[0] not in answers:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        answers[modules[0]] = {"error": "the import ended Python (exit %s): %s"
                                        % (done.returncode, last)}
    return answers


def check(spec, imported):
    """One install check, inside this env: a command (PATH starts with the env's bin) or an
    import (its answer from `import_versions`, run in a fresh interpreter, so a crashing import
    cannot take the probe down)."""
    result = {"name": spec["name"], "expected": spec.get("expect")}
    if "import" in spec:
        answer = imported.get(spec["import"], {"error": "no answer"})
        if "error" in answer:
            result.update(ok=False, value=None, message="import failed: " + answer["error"])
            return result
        value = answer["version"]
    else:
        env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
                   + os.environ.get("PATH", ""))
        try:
            done = subprocess.run(spec["command"], shell=True, capture_output=True, text=True,
                                  timeout=spec.get("timeout", 120), env=env)
        except subprocess.TimeoutExpired:
            result.update(ok=False, value=None, message="timed out")
            return result
        value = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            last = value.splitlines()[-1].strip()[:200] if value else ""
            missing = " (command not found)" if done.returncode == 127 else ""
            result.update(ok=False, value=last or None, message="exited %d%s: %s" % (
                done.returncode, missing, last or "no output"))
            return result
    expect = spec.get("expect")
    lines = [line for line in value.splitlines() if line.strip()]
    if expect:
        matching = [line for line in lines if re.search(expect, line)]
        if not matching:
            # Show the line the check was about: one sharing a word with the pattern.
            words = re.findall(r"[A-Za-z]{3,}", expect)
            related = [line for line in lines if any(w in line for w in words)]
            shown = (related or lines or [""])[-1 if not related else 0]
            result.update(ok=False, value=shown.strip(), message="does not match %r" % expect)
            return result
        value = matching[0]
    elif lines:
        value = lines[-1]
    result.update(ok=True, value=value.strip(), message=None)
    return result


def main():
    payload = json.loads(sys.stdin.read() or "{}")
    checks = payload.get("checks", [])
    imported = import_versions([spec["import"] for spec in checks if "import" in spec])
    packages, shadowed = distributions()
    shm = free_total("/dev/shm")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(json.dumps({
        "python": {"executable": sys.executable, "version": platform.python_version(),
                   "prefix": sys.prefix,
                   "user_site_enabled": bool(site.ENABLE_USER_SITE)},
        "shell_python": {name: shutil.which(name) for name in ("python", "python3")},
        "packages": packages,
        "shadowed": shadowed,
        "torch": torch_facts(),
        "nvcc": nvcc(),
        "gpus": gpus(),
        "system": {"kernel": platform.release(), "glibc": "-".join(platform.libc_ver()),
                   "cpu": cpu_model(), "hostname": platform.node()},
        "env": environment(),
        "limits": {"open_files": nofile[0], "shm_bytes": shm},
        "disk": {"hf_cache": hf_cache(), "hf_cache_free": free_bytes(hf_cache()),
                 "shared_free": free_bytes(payload["shared"]) if payload.get("shared") else None},
        "checks": [check(spec, imported) for spec in checks],
    }))


def free_total(path):
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_blocks * stats.f_frsize


main()
