"""Probe: can this node's Python log to W&B? Runs under the env's Python; stdlib at import.

Input (JSON on stdin): {"base_url" (null: the node's wandb picks its own server), "project",
"name", "mode": "offline" | "online" | null, "dir"}. Reports the interpreter, wandb's version
(or why it does not import), the server it will use and what said so (_wandb_server), where wandb
itself finds the login (WANDB_API_KEY or the netrc file, never the key), the netrc's mode, and,
when a mode is given, the outcome of `wandb.init(project, name, mode)` + one logged metric:
the run's folder, or its URL online.

The key is never printed: messages are scrubbed of it, and wandb's own console output goes to
stderr so that stdout carries only the one JSON line.
"""

import json
import os
import platform
import stat
import sys

from _secrets import SECRETS, scrub  # inlined by probes.load
from _wandb_server import wandb_server  # inlined by probes.load


def failure(e):
    return "%s: %s" % (type(e).__name__, scrub(str(e)))


def netrc_path():
    """The file wandb reads (its own rule: $NETRC, else ~/.netrc, else ~/_netrc)."""
    if os.environ.get("NETRC"):
        return os.path.expanduser(os.environ["NETRC"])
    for name in ("~/.netrc", "~/_netrc"):
        if os.path.exists(os.path.expanduser(name)):
            return os.path.expanduser(name)
    return os.path.expanduser("~/.netrc")


def netrc_facts():
    path = netrc_path()
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return {"path": path, "exists": False, "mode": None}
    return {"path": path, "exists": True, "mode": "%04o" % mode}


def find_login(base_url):
    """Ask wandb where it finds the key for base_url: {"found", "source", "problem"}."""
    if os.environ.get("WANDB_API_KEY"):
        SECRETS.append(os.environ["WANDB_API_KEY"])
        return {"found": True, "source": "WANDB_API_KEY", "problem": None}
    try:
        from wandb.sdk.lib.wbauth import HostUrl, wbnetrc  # wandb 0.22 and newer
    except ImportError:
        return find_login_before_wbauth(base_url)
    try:
        auth = wbnetrc.read_netrc_auth_with_source(host=HostUrl(base_url))
    except Exception as e:  # wandb raises on a key of the wrong format
        return {"found": True, "source": netrc_path(), "problem": failure(e)}
    if auth is None:
        return {"found": False, "source": None, "problem": None}
    SECRETS.append(auth.auth.api_key)
    return {"found": True, "source": auth.source, "problem": None}


def find_login_before_wbauth(base_url):
    """Older wandb: `wandb.sdk.lib.apikey.api_key` reads settings, then the netrc."""
    try:
        import wandb
        from wandb.sdk.lib import apikey

        settings = wandb.Settings(base_url=base_url)
        key = apikey.api_key(settings=settings)
    except Exception as e:
        return {"found": False, "source": None, "problem": failure(e)}
    if not key:
        return {"found": False, "source": None, "problem": None}
    SECRETS.append(key)
    return {"found": True, "source": netrc_path(), "problem": None}


def log_one_metric(wandb, request):
    """The tutorial's check: init a run named after the node, log test_metric, finish."""
    folder = os.path.expanduser(request.get("dir") or "~/.cache/clusterprep/wandb-verify")
    os.makedirs(folder, exist_ok=True)
    run = wandb.init(
        project=request["project"],
        name=request["name"],
        mode=request["mode"],
        dir=folder,
        settings=wandb.Settings(silent=True, **(
            {"base_url": request["base_url"]} if request.get("base_url") else {})),
    )
    try:
        run.log({"test_metric": 1})
        run_dir = os.path.dirname(run.dir)  # run.dir is the run's files/ folder
        url = getattr(run, "url", None) if request["mode"] == "online" else None
    finally:
        run.finish()
    return {"ok": True, "dir": run_dir, "url": url, "error": None}


def check(request):
    answer = {
        "python": sys.executable,
        "python_version": platform.python_version(),
        "wandb": None,
        "import_error": None,
        "login": None,
        "netrc": netrc_facts(),
        "run": None,
    }
    try:
        import wandb
    except Exception as e:
        answer["import_error"] = failure(e)
        return answer
    answer["wandb"] = getattr(wandb, "__version__", "unknown")
    server, source = wandb_server(request.get("base_url"),
                                  [os.path.dirname(os.path.abspath(wandb.__file__))])
    answer["server"] = {"url": server, "source": source}
    answer["login"] = find_login(server)
    if request.get("mode"):
        try:
            answer["run"] = log_one_metric(wandb, request)
        except Exception as e:
            answer["run"] = {"ok": False, "dir": None, "url": None, "error": failure(e)}
    return answer


def main():
    request = json.loads(sys.stdin.read())
    os.environ["WANDB_SILENT"] = "true"
    if request.get("mode"):
        os.environ["WANDB_MODE"] = request["mode"]
    # wandb and the service it starts may print: keep stdout for our one JSON line.
    stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        answer = check(request)
    except Exception as e:
        answer = {"error": failure(e)}
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
    print(scrub(json.dumps(answer)))


main()
