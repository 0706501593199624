"""The program every rank runs under torchrun in the smoke collective (never imported here:
`collective.py` sends its text to the nodes). It runs inside the recipe's env, with torch.

Each rank prints JSON lines on stdout: `started` (before it joins), `joined` (the process group
is up), and rank 0 one `size` line per all_reduce size (nccl-tests' figures: time per call,
algbw = bytes / time, busbw = algbw x 2(n-1)/n, #wrong elements over all ranks), then `done`.
A rank whose launcher dies ends itself: torchrun starts workers in sessions of their own.
"""

import argparse
import datetime
import json
import os
import socket
import sys
import threading
import time


def emit(event, **fields):
    fields.update(event=event, rank=int(os.environ["RANK"]))
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def follow_launcher():
    """Exit as soon as the torchrun agent that started us is gone (we were re-parented)."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--sizes", required=True, help="bytes per all_reduce, comma-separated")
    parser.add_argument("--iters", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args()
    follow_launcher()
    emit("started", host=socket.gethostname(), local_rank=int(os.environ["LOCAL_RANK"]),
         pid=os.getpid())

    import torch
    import torch.distributed as dist

    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    def settle():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def barrier():
        if device.type == "cuda":
            dist.barrier(device_ids=[device.index])
        else:
            dist.barrier()

    dist.init_process_group(args.backend, timeout=datetime.timedelta(seconds=args.timeout))
    emit("joined", world=world, torch=torch.__version__)
    for size in [int(s) for s in args.sizes.split(",")]:
        count = max(1, size // 4)
        buffer = torch.zeros(count, dtype=torch.float32, device=device)
        for _ in range(args.warmup):
            dist.all_reduce(buffer)
        settle()
        barrier()
        started = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(buffer)
        settle()
        seconds = (time.perf_counter() - started) / args.iters
        # Correctness: element i holds (i % 7 + 1) x (rank + 1); the sum over ranks is
        # (i % 7 + 1) x n(n+1)/2, exact in float32 for worlds up to about 2000 ranks.
        base = (torch.arange(count, dtype=torch.int32, device=device) % 7 + 1).float()
        values = base * (rank + 1)
        dist.all_reduce(values)
        wrong = int((values != base * (world * (world + 1) / 2)).sum().item())
        slowest = torch.tensor([seconds], dtype=torch.float64, device=device)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        wrong_total = torch.tensor([wrong], dtype=torch.float64, device=device)
        dist.all_reduce(wrong_total)
        if rank == 0:
            seconds = slowest.item()
            algbw = count * 4 / seconds / 1e9
            emit("size", bytes=count * 4, count=count, time_us=seconds * 1e6, algbw=algbw,
                 busbw=algbw * 2 * (world - 1) / world, wrong=int(wrong_total.item()))
    dist.destroy_process_group()
    emit("done")


if __name__ == "__main__":
    main()
