"""Probe part: how a node will talk to the others. The NCCL library and net plugins it would
load, NCCL's config files, its InfiniBand/RoCE ports and network interfaces, the memlock limit,
and the shell startup lines that set what the fingerprint reports. Read from files only (no
program is started); probes.load inlines it into the fingerprint probe; stdlib only."""

import _socket  # the C module: `socket` spends milliseconds building enums on every node
import fcntl
import os
import re
import resource
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
# line that sets a variable is the one in force. Then the env's conda activation scripts.
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


def loader_cache():
    """The paths of NCCL's files (libnccl*) that /etc/ld.so.cache knows: its string table
    holds every library path the loader finds by name."""
    try:
        with open("/etc/ld.so.cache", "rb") as f:
            data = f.read()
    except OSError:
        return []
    paths = []
    start = data.find(b"libnccl")
    while start >= 0:
        end = data.find(b"\0", start)
        end = len(data) if end < 0 else end
        path = data[data.rfind(b"\0", 0, start) + 1:end].decode("utf-8", "replace")
        if path.startswith("/") and path not in paths:
            paths.append(path)
        start = data.find(b"libnccl", end)
    return paths


def nccl_stack(loaded_by_torch, packages):
    """NCCL as the env loads it: its library, the net plugins it would find, its config files."""
    cache = loader_cache()
    library = nccl_library(loaded_by_torch, packages, cache)
    return {"library": library, "plugins": nccl_plugins(library, cache), "conf": nccl_conf()}


def nccl_library(loaded_by_torch, packages, cache):
    """The NCCL library torch loads: the one torch mapped (`loaded_by_torch`, from its fork),
    else the first found where torch would look (pip's nvidia-nccl package, LD_LIBRARY_PATH,
    the env's own lib, the loader cache, the trusted folders). Version from the file's full
    name (libnccl.so.2.19.3) or from pip's nvidia-nccl-* package."""
    how = "loaded by torch"
    path = loaded_by_torch
    if not path:
        how = "found where the loader looks"
        first = [os.path.join(entry, "nvidia", "nccl", "lib") for entry in sys.path
                 if entry.endswith("-packages")]  # torch's pip wheels link to it
        first += ld_library_path() + [os.path.join(sys.prefix, "lib")]
        cached = [p for p in cache if NCCL_LIBRARY.match(os.path.basename(p))]
        path = (existing(first, ("libnccl.so.2", "libnccl.so")) or next(iter(cached), None)
                or existing(LOADER_DEFAULT_DIRS, ("libnccl.so.2", "libnccl.so")))
    if not path:
        return None
    real = os.path.realpath(path)
    match = re.search(r"\.so\.(\d+\.\d+\.\d+)$", real)
    version = match.group(1) if match else None
    if version is None:
        pip = [v["version"] for name, v in packages.items() if name.startswith("nvidia-nccl")]
        version = pip[0] if pip else None
    return {"path": path, "real_path": real, "version": version, "how": how}


def ld_library_path():
    return [folder for folder in os.environ.get("LD_LIBRARY_PATH", "").split(":") if folder]


def existing(folders, names):
    """The first folder/name that exists, folders first (stat calls: no folder is listed)."""
    for folder in folders:
        for name in names:
            path = os.path.join(folder, name)
            if os.path.exists(path):
                return path
    return None


def nccl_plugins(library, cache):
    """The NCCL net plugins the loader can find: the one NCCL dlopen()s by name
    (libnccl-net.so, or libnccl-net-$NCCL_NET_PLUGIN.so) in the NCCL library's folder,
    LD_LIBRARY_PATH and the trusted folders, then every libnccl-net*.so the loader cache knows."""
    wanted = os.environ.get("NCCL_NET_PLUGIN")
    name = "libnccl-net-%s.so" % wanted if wanted else "libnccl-net.so"
    folders = ([os.path.dirname(library["path"])] if library else []) + ld_library_path()
    found = []
    path = existing(folders + list(LOADER_DEFAULT_DIRS), (name,))
    if path:
        found.append({"name": name, "path": path})
    for path in cache:
        plugin = os.path.basename(path)
        if NCCL_PLUGIN.match(plugin) and all(plugin != f["name"] for f in found):
            found.append({"name": plugin, "path": path})
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
            address = _socket.inet_ntop(_socket.AF_INET6, bytes.fromhex(fields[0]))
            ipv6.setdefault(fields[5], []).append(address)
    probe = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
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
                             name[:15].encode().ljust(256, b"\0"))
    except OSError:
        return []
    return [_socket.inet_ntoa(answer[20:24])]


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
    hide = re.compile(r"(\b\w*(?:%s)\w*=)[^\s;&|]+" % secret.pattern, re.IGNORECASE)
    token = re.compile(r"\b[\w-]{32,}\b")  # an API key given some other way (`wandb login K`)
    files = []
    for name in SHELL_STARTUP_FILES + (os.path.join(sys.prefix, "etc/conda/activate.d/*.sh"),):
        folder, _, pattern = os.path.expanduser(name).rpartition("/")
        if pattern == "*.sh":
            files += [os.path.join(folder, f) for f in listing(folder) if f.endswith(".sh")]
        else:
            files.append(os.path.join(folder, pattern))
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
                    {"file": path, "line": number,
                     "text": token.sub("<hidden>", hide.sub(r"\1<hidden>", stripped))[:200]})
    return found
