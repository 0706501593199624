"""Probe part: the W&B server this node's wandb will talk to, found as wandb itself finds it,
and the netrc machine wandb reads for it. Inlined by probes.load; stdlib only.

wandb's order (wandb_setup._load_settings, wandb 0.31): its defaults, then the global
settings file (`$WANDB_CONFIG_DIR/settings`, else `~/.config/wandb/settings`, section
`[default]`, key `base_url`), then `WANDB_BASE_URL`, then what the program passes
(clusterprep's `explicit`: the recipe's [wandb] host, or the head's WANDB_BASE_URL). The
default is the installed wandb's own: `DEFAULT_BASE_URL` in wandb/sdk/lib/urls.py (0.31:
https://api.forge.coreweave.com), before that the `base_url` default in
wandb/sdk/wandb_settings.py (https://api.wandb.ai). The netrc machine is the URL's host[:port]
(wbnetrc.write_netrc_auth: `urlsplit(host).netloc`).
"""

import configparser
import glob
import os
import re
from urllib.parse import urlsplit

CLASSIC = "https://api.wandb.ai"  # wandb before 0.31; 0.31 falls back to its netrc entry too


def wandb_default(package):
    """The default server of the wandb installed at `package` (its folder), or None."""
    for path, pattern in (
            (os.path.join(package, "sdk", "lib", "urls.py"),
             r'^DEFAULT_BASE_URL\s*=\s*"([^"]+)"'),
            (os.path.join(package, "sdk", "wandb_settings.py"),
             r'^\s+base_url:\s*str\s*=\s*"([^"]+)"')):
        try:
            with open(path) as f:
                found = re.search(pattern, f.read(), re.MULTILINE)
        except OSError:
            continue
        if found:
            return found.group(1)
    return None


def wandb_packages(python):
    """Where the env of `python` (PREFIX/bin/python) has wandb installed."""
    prefix = os.path.dirname(os.path.dirname(os.path.expanduser(python or "")))
    if not prefix:
        return []
    return sorted(glob.glob(os.path.join(prefix, "lib", "python3*", "site-packages", "wandb")))


def settings_file():
    folder = os.environ.get("WANDB_CONFIG_DIR")
    return os.path.join(os.path.expanduser(folder) if folder else
                        os.path.expanduser("~/.config/wandb"), "settings")


def wandb_server(explicit, packages):
    """(url, where it came from) for this node."""
    if explicit:
        return explicit, "given to clusterprep (the recipe's [wandb] host, or WANDB_BASE_URL)"
    if os.environ.get("WANDB_BASE_URL", "").strip():
        return os.environ["WANDB_BASE_URL"].strip().rstrip("/"), "WANDB_BASE_URL"
    path = settings_file()
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
        configured = parser.get("default", "base_url", fallback="").strip()
    except configparser.Error:
        configured = ""
    if configured:
        return configured.rstrip("/"), path
    for package in packages:
        default = wandb_default(package)
        if default:
            return default, "the default of wandb at " + package
    return CLASSIC, "no wandb found: W&B's classic server, which every wandb reads"


def netrc_machine(url):
    return urlsplit(url if "://" in url else "https://" + url).netloc
