"""Probe: everything about a node that changes what training code runs or how nodes talk.

Runs on the node under the env's Python (stdlib only, Python 3.8+). Input on stdin (JSON):
    {"shared": "/abs/shared/dir" | null, "activate": "shell lines that activate the env" | null,
     "checks": [{"name", "command" | "import", "expect"}], "gpu_diag": true | false}
Output: a first line {"clock": <node time>} printed at once (the head times its arrival to
measure the clock offset), then one JSON object with the fingerprint and the check results:
the communication stack (NCCL, its plugins, the fabric) and GPU health included.
"""

import hashlib
import importlib
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import site
import subprocess
import sys
import time

print(json.dumps({"clock": time.time()}), flush=True)

from _comms import fabric, memlock, nccl_stack, startup_lines  # inlined by probes.load
from _hubcache import hub_cache  # inlined by probes.load

# The GPU health code is compiled only on nodes with nvidia-smi: compiling it would cost every
# other node (and the head, when it is one) milliseconds for nothing. It travels as text.
GPU_HEALTH = r'''
from _gpuhealth import gpu_diag, gpus, xid_events  # inlined by probes.load
'''

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
        location = os.path.abspath(entry or ".")
        outside = not inside(location, sys.prefix) and not inside(location, sys.base_prefix)
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
            found = {"version": version, "location": location}
            record = read_bytes(os.path.join(info, "RECORD"))
            if record and (b".so," in record or b".pyd," in record):  # compiled: which build?
                found["build"] = hashlib.sha256(record).hexdigest()[:16]
            packages[name] = found
            if outside:
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


def nvcc():
    path = shutil.which("nvcc") or os.path.join(sys.prefix, "bin", "nvcc")
    if not os.path.exists(path):
        return None
    status, output = run([path, "--version"])
    match = re.search(r"release ([\d.]+)", output or "")
    return match.group(1) if match else output


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


# Everything that imports the env's packages (the import checks, their values, torch's own
# facts) runs in forked copies of this probe: torch and what builds on it load once per node,
# never into the probe itself, and a fork costs far less than starting a new interpreter.
# A job is (module, expression): None asks the module's version, TORCH_FACTS torch's facts.

TORCH_FACTS = "<torch facts>"
IMPORT_LIMIT = 600  # seconds; torch from a shared env on a busy network filesystem is slow
COMMAND_LIMIT = 120


def import_jobs(checks):
    """{job: its time limit} for the distinct jobs the checks need, in order, torch's facts
    last (by then the checks have loaded torch), limited like the quickest torch check."""
    jobs = {}
    for spec in checks:
        if "import" in spec:
            job = (spec["import"], spec.get("value"))
            jobs[job] = max(jobs.get(job, 0), spec.get("timeout", IMPORT_LIMIT))
    torch_limits = [limit for (module, _), limit in jobs.items() if module == "torch"]
    jobs[("torch", TORCH_FACTS)] = min(torch_limits or [IMPORT_LIMIT])
    return jobs


def answer(job):
    """Run one job in the fork: {"value": ...} or {"error": why}."""
    name, expression = job
    try:
        module = importlib.import_module(name)
    except BaseException as e:  # SystemExit and KeyboardInterrupt included: a fact, not an end
        return {"error": "import failed: %s: %s" % (type(e).__name__, e)}
    if expression == TORCH_FACTS:
        return {"value": torch_facts(module)}
    if expression is None:
        return {"value": module_version(module, name)}
    top = name.split(".")[0]
    try:
        return {"value": str(eval(expression, {top: sys.modules[top]}))}
    except BaseException as e:
        return {"error": "value failed: %s: %s" % (type(e).__name__, e)}


def module_version(module, name):
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        from importlib import metadata
        top = name.split(".")[0]
        names = getattr(metadata, "packages_distributions", dict)().get(top, [top])
        return metadata.version(names[0])
    except Exception:
        return ""


def torch_facts(torch):
    facts = {"version": getattr(torch, "__version__", None),
             "cuda": getattr(getattr(torch, "version", None), "cuda", None)}
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
    facts["nccl_library"] = mapped("libnccl")
    return facts


def mapped(name):
    """The file of a shared library whose name starts with `name` that this process mapped."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.rstrip("\n").split(None, 5)[-1]
                if os.path.basename(path).startswith(name + "."):
                    return path
    except OSError:
        pass
    return None


def answers_in_forks(jobs):
    """{job: answer} for `jobs` ({job: time limit}). A job that ends its fork (a crashing
    import) or outlasts its limit answers with why; the jobs after it run in a fresh fork."""
    answers = {}
    order = list(jobs)
    while len(answers) < len(order):
        pending = order[len(answers):]
        got, failure = in_fork(pending, [jobs[job] for job in pending])
        answers.update(zip(pending, got))
        if len(got) < len(pending):
            job = pending[len(got)]
            what = "import" if job[1] in (None, TORCH_FACTS) else "import or value"
            answers[job] = {"error": "%s failed: %s" % (what, failure)}
    return answers


def in_fork(jobs, limits):
    """(answers to the first of `jobs`, in order; why the fork ended before the rest)."""
    results_r, results_w = os.pipe()
    output_r, output_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 0
        try:  # what the imports print must not reach the probe's own output
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(output_w, 1)
            os.dup2(output_w, 2)
            with os.fdopen(results_w, "w") as results:
                for job in jobs:
                    results.write(json.dumps(answer(job)) + "\n")
                    results.flush()
        except BaseException:  # a bug here, not in a job: its last line becomes the reason
            import traceback
            traceback.print_exc()
            status = 70
        os._exit(status)  # no atexit handlers, no flushing of the probe's buffers
    os.close(results_w)
    os.close(output_w)
    answers, output, overdue = read_answers(results_r, output_r, limits)
    if overdue:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(results_r)
    os.close(output_r)
    if overdue:
        return answers, "timed out after %g s" % limits[len(answers)]
    if os.WIFSIGNALED(status):
        how = "killed by signal %d" % os.WTERMSIG(status)
    else:
        how = "exit %d" % os.WEXITSTATUS(status)
    last = (output.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
    return answers, "it ended Python (%s): %s" % (how, last[:200])


def read_answers(results, output, limits):
    """(answers read from the fd `results`, one JSON line each, until every job has one or
    the fork ends; the last 4 kB the fork printed on the fd `output`; whether the job being
    answered outlasted its limit)."""
    answers, line, tail = [], b"", b""
    deadline = time.monotonic() + limits[0]
    open_fds = [results, output]
    while results in open_fds and len(answers) < len(limits):
        left = deadline - time.monotonic()
        ready = select.select(open_fds, [], [], left)[0] if left > 0 else []
        if not ready:
            return answers, tail, True
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
            elif fd == output:
                tail = (tail + chunk)[-4096:]
            else:
                *lines, line = (line + chunk).split(b"\n")  # a cut-short line is no answer
                answers += [json.loads(done) for done in lines]
                if lines and len(answers) < len(limits):
                    deadline = time.monotonic() + limits[len(answers)]
    # Ended early: what it printed last says why (a process it left may hold `output` open).
    while len(answers) < len(limits) and select.select([output], [], [], 1)[0]:
        chunk = os.read(output, 65536)
        if not chunk:
            break
        tail = (tail + chunk)[-4096:]
    return answers, tail, False


ACTIVE = "clusterprep: the env is active"
_activated = {}  # activation script -> its answer, asked once per probe


def activated_environment(script):
    """(the environment a shell has once `script`, the env's activation, has run; None), or
    (None, why it failed). `env -0` prints it after a marker, so nothing the activation
    prints itself can be taken for it."""
    if script not in _activated:
        _activated[script] = ask_activated_environment(script)
    return _activated[script]


def ask_activated_environment(script):
    listing = "\nprintf '\\0%s\\0' '" + ACTIVE + "'\nenv -0\n"
    try:
        done = subprocess.run(["bash", "-c", script + listing], capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=COMMAND_LIMIT)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "activating the env failed: %s" % e
    marker = b"\0" + ACTIVE.encode() + b"\0"
    if done.returncode != 0 or marker not in done.stdout:
        said = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
        return None, "activating the env failed (exit %d): %s" % (
            done.returncode, said[-1][:200] if said else "no output")
    entries = done.stdout.rsplit(marker, 1)[1].split(b"\0")
    return dict(entry.decode(errors="surrogateescape").split("=", 1)
                for entry in entries if b"=" in entry), None


def check(spec, answers, activate=None):
    """One install check, inside this env: a command, run by bash in the environment the env's
    `activate` script leaves (the one `up` ran the install commands in), or an import, with
    its version or `value` (its answer from `answers_in_forks`)."""
    result = {"name": spec["name"], "expected": spec.get("expect")}
    if "import" in spec:
        answer = answers[(spec["import"], spec.get("value"))]
        if "error" in answer:
            result.update(ok=False, value=None, message=answer["error"])
            return result
        value = answer["value"]
    else:
        env, failure = activated_environment(activate) if activate else (None, None)
        if failure:
            result.update(ok=False, value=None, message=failure)
            return result
        try:
            done = subprocess.run(["bash", "-c", spec["command"]], capture_output=True, text=True,
                                  timeout=spec.get("timeout", COMMAND_LIMIT), env=env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            result.update(ok=False, value=None, message="timed out after %g s" % e.timeout)
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
            result.update(ok=False, value=shown.strip(), message="does not match '%s'" % expect)
            return result
        value = matching[0]
    elif lines:
        value = lines[-1]
    result.update(ok=True, value=value.strip(), message=None)
    return result


def main():
    payload = json.loads(sys.stdin.read() or "{}")
    checks = payload.get("checks", [])
    answers = answers_in_forks(import_jobs(checks))
    torch = answers[("torch", TORCH_FACTS)]
    packages, shadowed = distributions()
    shm = free_total("/dev/shm")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    env = environment()
    nccl = nccl_stack((torch.get("value") or {}).pop("nccl_library", None), packages)
    gpu, xid, diag = gpu_health(payload.get("gpu_diag"))
    print(json.dumps({
        "python": {"executable": sys.executable, "version": platform.python_version(),
                   "prefix": sys.prefix,
                   "user_site_enabled": bool(site.ENABLE_USER_SITE)},
        "shell_python": {name: shutil.which(name) for name in ("python", "python3")},
        "packages": packages,
        "shadowed": shadowed,
        "torch": torch.get("value") or {"error": torch["error"]},
        "nvcc": nvcc(),
        "gpus": gpu,
        "xid": xid,
        "gpu_diag": diag,
        "nccl": nccl,
        "fabric": fabric(),
        "system": {"kernel": platform.release(), "glibc": "-".join(platform.libc_ver()),
                   "cpu": cpu_model(), "hostname": platform.node()},
        "env": env,
        "startup_lines": startup_lines(list(env) + ["PATH"], SECRET),
        "limits": {"open_files": nofile[0], "shm_bytes": shm, "memlock": memlock()},
        "disk": {"hf_cache": hub_cache()[0], "hf_cache_free": free_bytes(hub_cache()[0]),
                 "shared_free": free_bytes(payload["shared"]) if payload.get("shared") else None},
        "checks": [check(spec, answers, payload.get("activate")) for spec in checks],
    }))


def gpu_health(diagnose):
    """(the GPUs and their health, their Xid events, DCGM's diagnostic if `diagnose`)."""
    if shutil.which("nvidia-smi") is None:
        return {"count": 0, "models": [], "driver": None, "devices": []}, None, None
    part = {}
    exec(compile(GPU_HEALTH, "gpuhealth", "exec"), part)
    gpu = part["gpus"]()
    if not gpu["count"]:
        return gpu, None, None
    return gpu, part["xid_events"](), part["gpu_diag"]() if diagnose else None


def free_total(path):
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_blocks * stats.f_frsize


main()
