"""Probe part: how a node will talk to the others. The NCCL library and net plugins it would
load, NCCL's config files, its InfiniBand/RoCE ports and network interfaces, the memlock limit,
and the shell startup lines that set what the fingerprint reports. Read from files only (no
program is started); probes.load inlines it into the fingerprint probe; stdlib only."""

import fcntl
import glob
import os
import re
import resource
import socket
import struct
import sys

# Where the dynamic loader looks for a library dlopen()ed by name, after LD_LIBRARY_PATH and
# the folders of /etc/ld.so.cache: the trusted folders (ld.so(8)), Debian's multiarch first.
LOADER_DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                       "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                       "/lib64", "/usr/lib64", "/lib", "/usr/lib")
NCCL_LIBRARY = re.compile(r"libnccl\.so(\.\d+)*$")
NCCL_PLUGIN = re.compile(r"libnccl-net(-[\w.-]+)?\.so(\.\d+)*$")
# NCCL reads these files for variables the environment leaves unset (NCCL's env.html).
NCCL_CONF_FILES = ("/etc/nccl.conf", "~/.nccl.conf")
# In the order a login shell runs them (a command over ssh runs the last two only): the last
# line that sets a variable is the one in force.
SHELL_STARTUP_FILES = ("/etc/environment", "/etc/profile", "/etc/profile.d/*.sh", "~/.profile",
                       "~/.bash_profile", "~/.bash_login", "/etc/bash.bashrc", "~/.bashrc")
SIOCGIFADDR = 0x8915  # <linux/sockios.h>
CAP_IPC_LOCK = 14  # <linux/capability.h>: pin memory past the memlock limit


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def listing(folder):
    """The names in a folder, sorted; none where it cannot be read."""
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def sysfs(path):
    """A sysfs attribute's text, stripped, or None where it cannot be read."""
    text = read_text(path)
    return None if text is None else text.strip()


def loader_cache_paths(pattern):
    """Paths in /etc/ld.so.cache whose file name matches `pattern` (its string table holds
    every path the loader knows by name)."""
    try:
        with open("/etc/ld.so.cache", "rb") as f:
            data = f.read()
    except OSError:
        return []
    found = []
    for raw in re.findall(rb"/[\x21-\x7e]*lib[\x21-\x7e]*", data):
        path = raw.decode("ascii", "replace")
        if pattern.search(os.path.basename(path)) and path not in found:
            found.append(path)
    return found


def library_dirs():
    """The folders the loader searches for a library loaded by name, in its order."""
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    return dirs + list(LOADER_DEFAULT_DIRS)


def nccl_stack(loaded_by_torch, packages):
    """NCCL as the env loads it: its library, the net plugins it would find, its config files."""
    library = nccl_library(loaded_by_torch, packages)
    return {"library": library, "plugins": nccl_plugins(library), "conf": nccl_conf()}


def nccl_library(loaded_by_torch, packages):
    """The NCCL library torch loads: the one torch mapped (`loaded_by_torch`, from its fork),
    else the first the loader would find (LD_LIBRARY_PATH, the env's own lib, pip's
    nvidia-nccl package, the loader cache, the trusted folders). Version from the file's full
    name (libnccl.so.2.19.3) or from pip's nvidia-nccl-* package."""
    how = "loaded by torch"
    path = loaded_by_torch
    if not path:
        how = "found where the loader looks"
        candidates = [os.path.join(entry, "nvidia", "nccl", "lib") for entry in sys.path
                      if entry.endswith("-packages")]  # torch's pip wheels link to it
        candidates += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
        candidates.append(os.path.join(sys.prefix, "lib"))
        path = (first_match(candidates, NCCL_LIBRARY)
                or next(iter(loader_cache_paths(NCCL_LIBRARY)), None)
                or first_match(LOADER_DEFAULT_DIRS, NCCL_LIBRARY))
    if not path:
        return None
    real = os.path.realpath(path)
    match = re.search(r"\.so\.(\d+\.\d+\.\d+)$", real)
    version = match.group(1) if match else None
    if version is None:
        pip = [v["version"] for name, v in packages.items() if name.startswith("nvidia-nccl")]
        version = pip[0] if pip else None
    return {"path": path, "real_path": real, "version": version, "how": how}


def first_match(dirs, pattern):
    for folder in dirs:
        for name in listing(folder):
            if pattern.match(name):
                return os.path.join(folder, name)
    return None


def nccl_plugins(library):
    """Every NCCL net plugin (libnccl-net*.so) where NCCL's dlopen() would look: the loader's
    folders, the NCCL library's own folder, and the loader cache; first found first."""
    dirs = library_dirs()
    if library:
        dirs.insert(0, os.path.dirname(library["path"]))
    found, seen = [], set()
    for folder in dirs:
        for name in listing(folder):
            if NCCL_PLUGIN.match(name) and name not in seen:
                seen.add(name)
                found.append({"name": name, "path": os.path.join(folder, name)})
    for path in loader_cache_paths(NCCL_PLUGIN):
        if os.path.basename(path) not in seen:
            seen.add(os.path.basename(path))
            found.append({"name": os.path.basename(path), "path": path})
    return found


def nccl_conf():
    """NCCL's own config files: {file: {variable: value}} for those that exist."""
    files = list(NCCL_CONF_FILES)
    if os.environ.get("NCCL_CONF_FILE"):
        files.append(os.environ["NCCL_CONF_FILE"])
    found = {}
    for name in files:
        text = read_text(os.path.expanduser(name))
        if text is None:
            continue
        values = {}
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
        found[os.path.expanduser(name)] = values
    return found


def fabric():
    return {"infiniband": infiniband(), "interfaces": interfaces()}


def infiniband():
    """Every RDMA device and port from /sys/class/infiniband, as the kernel words them."""
    root = "/sys/class/infiniband"
    found = []
    for device in listing(root):
        base = os.path.join(root, device)
        ports = []
        numbers = [n for n in listing(os.path.join(base, "ports")) if n.isdigit()]
        for number in sorted(numbers, key=int):
            port = os.path.join(base, "ports", number)
            ports.append({"port": int(number),
                          "state": word(sysfs(os.path.join(port, "state"))),
                          "phys_state": word(sysfs(os.path.join(port, "phys_state"))),
                          "rate": sysfs(os.path.join(port, "rate")),
                          "link_layer": sysfs(os.path.join(port, "link_layer"))})
        found.append({"device": device, "firmware": sysfs(os.path.join(base, "fw_ver")),
                      "ports": ports})
    return found


def word(text):
    """'4: ACTIVE' -> 'ACTIVE' (sysfs prints the number, then the name)."""
    if text is None:
        return None
    return text.split(":", 1)[1].strip() if ":" in text else text


def interfaces():
    """Every network interface: state, MTU, whether it is a physical device, addresses."""
    root = "/sys/class/net"
    names = listing(root)
    ipv6 = {}
    for line in (read_text("/proc/net/if_inet6") or "").splitlines():
        fields = line.split()
        if len(fields) == 6:
            address = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0]))
            ipv6.setdefault(fields[5], []).append(address)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    found = []
    try:
        for name in names:
            base = os.path.join(root, name)
            mtu = sysfs(os.path.join(base, "mtu"))
            found.append({"name": name, "state": sysfs(os.path.join(base, "operstate")),
                          "mtu": int(mtu) if mtu and mtu.isdigit() else None,
                          "physical": os.path.exists(os.path.join(base, "device")),
                          "addresses": ipv4(probe, name) + ipv6.get(name, [])})
    finally:
        probe.close()
    return found


def ipv4(probe, name):
    try:
        answer = fcntl.ioctl(probe.fileno(), SIOCGIFADDR,
                             struct.pack("256s", name[:15].encode()))
    except OSError:
        return []
    return [socket.inet_ntoa(answer[20:24])]


def memlock():
    """The memlock limit (ulimit -l) in bytes, soft and hard (None: unlimited), and whether
    this user may pin memory past it anyway (CAP_IPC_LOCK, as root outside a container)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    unlimited = resource.RLIM_INFINITY
    status = read_text("/proc/self/status") or ""
    effective = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", status, re.MULTILINE)
    return {"soft": None if soft == unlimited else soft,
            "hard": None if hard == unlimited else hard,
            "ipc_lock": bool(effective and int(effective.group(1), 16) >> CAP_IPC_LOCK & 1)}


def startup_lines(names, secret):
    """{name: [{file, line, text}]}: the lines of the shell startup files (and the env's conda
    activation scripts) that set one of `names`, or that lower the memlock limit (under
    'ulimit -l'). Values of variables whose name looks secret are hidden."""
    wanted = [re.escape(n) for n in names if not secret.search(n)]
    if not wanted:
        return {}
    assignment = re.compile(r"(?:^|[\s;&|(])(?:export\s+|declare\s+-x\s+|setenv\s+)?(%s)\+?="
                            % "|".join(wanted))
    ulimit = re.compile(r"\bulimit\b[^#\n]*-[a-zA-Z]*l\s+\d")
    hide = re.compile(r"(\b\w*(?:%s)\w*=)\S+" % secret.pattern, re.IGNORECASE)
    files = [path for pattern in SHELL_STARTUP_FILES
             for path in sorted(glob.glob(os.path.expanduser(pattern)))]
    files += sorted(glob.glob(os.path.join(sys.prefix, "etc", "conda", "activate.d", "*.sh")))
    found = {}
    for path in files:
        text = read_text(path)
        if not text:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            keys = [m.group(1) for m in assignment.finditer(line)]
            if ulimit.search(line):
                keys.append("ulimit -l")
            for key in keys:
                found.setdefault(key, []).append(
                    {"file": path, "line": number, "text": hide.sub(r"\1<hidden>", stripped)[:200]})
    return found
