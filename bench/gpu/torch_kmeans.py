#!/usr/bin/env python3
"""PyTorch peer of bench_kmeans_gpu: nearest-centroid assignment (GEMM + argmin, the usual
PyTorch K-means formulation) and one Lloyd iteration (assignment, index_add_ sums, bincount,
update with empty clusters kept), on the same synthetic data, timed with CUDA events (median of
--repeats after one warm-up).

Data: generated on the GPU with the integer hash of bench/gpu/synthetic_data.hpp in int64
arithmetic masked to 32 bits, so x and the centroids are bit-identical to the C++ benchmark's.

Prints lines in the C++ benchmark's format:
  RESULT impl=torch op=assign|lloyd d=.. k=.. n=.. precision=fp32|tf32 ms=.. vec_per_s=..
         tflops=.. mean_dist2=.. label_sum=..
"""
import argparse
import sys

MASK32 = 0xFFFFFFFF


def lowbias32(x):
    """Chris Wellons' lowbias32 on non-negative int64 values below 2**32 (torch tensors, numpy
    arrays or Python ints). Products may wrap modulo 2**64; the mask keeps the low 32 bits, which
    wrapping does not change."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK32
    x = x ^ (x >> 16)
    return x


def synthetic_values(rows, cols, seed):
    """int64 tensor/array h of the generator for given row and column index vectors."""
    mix = lowbias32(seed & MASK32)
    h1 = lowbias32(rows ^ mix)
    return lowbias32((h1[:, None] + cols[None, :]) & MASK32)


def synthetic(torch, n_rows, n_cols, seed, device, chunk_rows=1 << 17):
    out = torch.empty(n_rows, n_cols, dtype=torch.float32, device=device)
    cols = torch.arange(n_cols, dtype=torch.int64, device=device)
    for r0 in range(0, n_rows, chunk_rows):
        r1 = min(n_rows, r0 + chunk_rows)
        rows = torch.arange(r0, r1, dtype=torch.int64, device=device)
        h = synthetic_values(rows, cols, seed)
        out[r0:r1] = ((h >> 8) - (1 << 23)).to(torch.float32) * (2.0 ** -22)
    return out


def assign(torch, x, c, chunk_rows, labels, dist2):
    cn = (c * c).sum(dim=1)
    ct = c.t()
    for r0 in range(0, x.shape[0], chunk_rows):
        xb = x[r0:r0 + chunk_rows]
        xn = (xb * xb).sum(dim=1, keepdim=True)
        dd = torch.addmm(cn.unsqueeze(0), xb, ct, beta=1.0, alpha=-2.0)
        dd.add_(xn).clamp_min_(0.0)
        m, idx = dd.min(dim=1)  # ties: first (lowest) index
        dist2[r0:r0 + chunk_rows] = m
        labels[r0:r0 + chunk_rows] = idx


def lloyd(torch, x, c, chunk_rows, labels, dist2):
    assign(torch, x, c, chunk_rows, labels, dist2)
    k, d = c.shape
    sums = torch.zeros(k, d, dtype=torch.float32, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k)
    new_c = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1).unsqueeze(1).to(torch.float32), c)
    c.copy_(new_c)
    return counts


def median_ms(torch, repeats, work):
    work()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        work()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def report(op, d, k, n, precision, ms, dist2, labels):
    flops = 2.0 * n * k * d
    mean = dist2.double().sum().item() / n
    label_sum = int(labels.sum().item())
    print(f"RESULT impl=torch op={op} d={d} k={k} n={n} precision={precision} ms={ms:.3f} "
          f"vec_per_s={n / (ms * 1e-3):.4e} tflops={flops / (ms * 1e-3) / 1e12:.2f} "
          f"mean_dist2={mean:.6f} label_sum={label_sum}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 22)
    ap.add_argument("--dims", type=str, default="768,64")
    ap.add_argument("--ks", type=str, default="256,1024,8192")
    ap.add_argument("--precisions", type=str, default="fp32,tf32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lloyd", type=int, default=1)
    ap.add_argument("--tile-mib", type=int, default=512, help="distance chunk budget (MiB)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        print(f"SKIPPED: PyTorch is not installed ({e})", flush=True)
        return 77
    if not torch.cuda.is_available():
        print("SKIPPED: PyTorch sees no CUDA device", flush=True)
        return 77
    dev = torch.device("cuda")
    print(f"TORCH {torch.__version__} cuda {torch.version.cuda} {torch.cuda.get_device_name(0)}", flush=True)
    n = args.n
    for d in [int(v) for v in args.dims.split(",") if v]:
        x = synthetic(torch, n, d, args.seed, dev)
        labels = torch.empty(n, dtype=torch.int64, device=dev)
        dist2 = torch.empty(n, dtype=torch.float32, device=dev)
        for k in [int(v) for v in args.ks.split(",") if v]:
            c0 = synthetic(torch, k, d, args.seed + 1, dev)
            chunk = max(128, (args.tile_mib << 20) // (4 * k) // 128 * 128)
            for precision in [p for p in args.precisions.split(",") if p]:
                torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")
                ms = median_ms(torch, args.repeats, lambda: assign(torch, x, c0, chunk, labels, dist2))
                report("assign", d, k, n, precision, ms, dist2, labels)
                if not args.lloyd:
                    continue
                c = c0.clone()
                times = []
                start = torch.cuda.Event(enable_timing=True)
                stop = torch.cuda.Event(enable_timing=True)
                for r in range(args.repeats + 1):  # r = 0: warm-up
                    c.copy_(c0)
                    torch.cuda.synchronize()
                    start.record()
                    lloyd(torch, x, c, chunk, labels, dist2)
                    stop.record()
                    stop.synchronize()
                    if r > 0:
                        times.append(start.elapsed_time(stop))
                times.sort()
                report("lloyd", d, k, n, precision, times[len(times) // 2], dist2, labels)
            del c0
        del x, labels, dist2
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
