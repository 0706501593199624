"""What a user would run by hand instead of `clusterprep smoke`'s collective: a plain torchrun
script doing the same all_reduce sweep (same sizes, warm-up and timed calls, nccl-tests'
busbw), launched on each node with ssh. bench_smoke.py compares the two busbw figures.

Usage (under torchrun): plain_allreduce.py --sizes 1048576,16777216 --iters 20 --warmup 5
"""

import argparse
import time

import torch
import torch.distributed as dist

parser = argparse.ArgumentParser()
parser.add_argument("--sizes", required=True)
parser.add_argument("--iters", type=int, default=20)
parser.add_argument("--warmup", type=int, default=5)
args = parser.parse_args()

dist.init_process_group("gloo")
world = dist.get_world_size()
for size in [int(s) for s in args.sizes.split(",")]:
    buffer = torch.zeros(size // 4, dtype=torch.float32)
    for _ in range(args.warmup):
        dist.all_reduce(buffer)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(args.iters):
        dist.all_reduce(buffer)
    seconds = torch.tensor([(time.perf_counter() - started) / args.iters], dtype=torch.float64)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    if dist.get_rank() == 0:
        algbw = size / seconds.item() / 1e9
        print(f"{size} {algbw * 2 * (world - 1) / world:.6f}", flush=True)
dist.destroy_process_group()
