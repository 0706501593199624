"""Probe: how this node resolves the cluster's names, and how many GPUs it would train on.

Stdlib only; runs on the node. Input: `{"names": [...]}`. Output: one JSON object with this
node's hostname, each name's addresses in the order a connect would try them (or why it does
not resolve), and the GPU count (driver's GPUs, narrowed by CUDA_VISIBLE_DEVICES).
"""

import json
import os
import socket
import sys


def resolve(name):
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        return {"error": e.strerror or str(e)}
    except UnicodeError as e:
        return {"error": str(e)}
    addresses = []
    for info in infos:
        if info[4][0] not in addresses:
            addresses.append(info[4][0])
    return {"addresses": addresses}


def resolve_all(names):
    if len(names) <= 8:
        return {name: resolve(name) for name in names}
    # Many names through DNS: ask in parallel, one lookup's latency at a time per thread.
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(16) as pool:
        return dict(zip(names, pool.map(resolve, names)))


def gpu_count():
    """The GPUs a training process would see: the driver's, narrowed by CUDA_VISIBLE_DEVICES."""
    try:
        physical = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        try:
            physical = sum(1 for d in os.listdir("/dev") if d[6:].isdigit()
                           and d.startswith("nvidia"))
        except OSError:
            physical = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return physical
    listed = [d for d in visible.split(",") if d.strip()]
    # CUDA stops at the first invalid entry, such as -1.
    valid = 0
    for entry in listed:
        if entry.strip().lstrip("-").isdigit() and int(entry) < 0:
            break
        valid += 1
    return min(valid, physical)


def main():
    request = json.loads(sys.stdin.buffer.read() or b"{}")
    print(json.dumps({
        "hostname": socket.gethostname(),
        "resolved": resolve_all(request.get("names", [])),
        "gpus": gpu_count(),
    }))


main()
