"""kmim_kmeans vs faiss vs scikit-learn (not a test): same data, K, iterations, initial centroids
and threads, one run. Prints a markdown table (bench/RESULTS.md, section "K-means CPU").

    python run_bench.py KMIM_BIN TOOLS_DIR WORK_DIR THREADS ITERS ROUNDS

The machine may be shared: every (data, K) runs all three methods ROUNDS times, interleaved, and
the table keeps each method's fastest round; the sgemm peak is the best of the measurements made
during the run."""
import json
import os
import re
import subprocess
import sys
import time

import faiss
import h5py
import numpy as np

kmim_bin, tools, work = sys.argv[1], sys.argv[2], sys.argv[3]
threads, iters, rounds = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
here = os.path.dirname(os.path.abspath(__file__))
env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
           HDF5_USE_FILE_LOCKING="FALSE")


def run(cmd):
    """Runs cmd under /usr/bin/time; returns (output, wall seconds, peak RSS MiB of cmd alone)."""
    rss_file = f"{work}/rss.txt"
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}")
    with open(rss_file) as f:
        rss = float(f.read().strip().splitlines()[-1]) / 1024.0
    return p.stdout, wall, rss


def sgemm(*shape):
    out = run([f"{tools}/sgemm_peak", str(threads), *map(str, shape)])[0]
    peak = float(re.search(r"sgemm_peak_gflops (\S+)", out).group(1))
    m = re.search(r"sgemm_shape_gflops (\S+)", out)
    return peak, float(m.group(1)) if m else None


def inertia(x, c):
    """Objective of centroids c on x: labels by faiss exact search, distances recomputed in fp64."""
    index = faiss.IndexFlatL2(c.shape[1])
    index.add(np.ascontiguousarray(c, dtype=np.float32))
    total = 0.0
    for s in range(0, len(x), 1 << 18):
        xb = x[s:s + (1 << 18)]
        _, labels = index.search(xb, 1)
        diff = xb.astype(np.float64) - c[labels[:, 0]].astype(np.float64)
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


faiss.omp_set_num_threads(threads)
peak = sgemm()[0]
datasets = [("fmnist", "Fashion-MNIST 7×7 patches", f"{work}/fmnist.h5"),
            ("synthetic", "synthetic Gaussian mixture", f"{work}/synthetic.h5")]
rows = []
versions = {}
for name, title, path in datasets:
    with h5py.File(path, "r") as f:
        x = np.ascontiguousarray(f["features"][...], dtype=np.float32)
    n, d = x.shape
    for k in (16, 256, 1024):
        init = f"{work}/init_{name}_{k}.h5"
        run([f"{tools}/make_bench_data", "init", path, init, str(k), "5"])
        best = {}  # method -> (train, wall, rss, centroids, n_iter)
        shape = 0.0
        for _ in range(rounds):
            p, s = sgemm(d, k)
            peak, shape = max(peak, p), max(shape, s)
            # kmim_kmeans: the real program; train time = its per-iteration times (the log's seconds).
            out_h5 = f"{work}/kmim_{name}_{k}.h5"
            log, wall, rss = run([kmim_bin, "--features", path, "-k", str(k), "--iters", str(iters), "--tol", "0",
                                  "--init-centroids", init, "--threads", str(threads), "--checkpoint-every", "0",
                                  "--out", out_h5])
            train = sum(float(v) for v in re.findall(r"iteration \d+/\d+ .*?  (\S+) s  ", log))
            with h5py.File(out_h5, "r") as f:
                result = {"kmim": (train, wall, rss, f["centroids"][...], iters)}
            for method in ("faiss", "sklearn"):
                npy = f"{work}/{method}_{name}_{k}.npy"
                out, wall, rss = run([sys.executable, f"{here}/peer.py", method, path, init, str(iters),
                                      str(threads), npy])
                info = json.loads(out.strip().splitlines()[-1])
                versions[method] = info["version"]
                result[method] = (info["train_s"], wall, rss, np.load(npy), info["n_iter"])
            for m, r in result.items():
                if m not in best or r[0] < best[m][0]:
                    best[m] = r
        objective = {m: inertia(x, r[3]) for m, r in best.items()}
        lowest = min(objective.values())
        for m, (train, wall, rss, _, n_iter) in best.items():
            g = 2.0 * n * k * d * n_iter / train / 1e9
            rows.append((title, f"{n}×{d}", k, m, n_iter, train, wall, objective[m], objective[m] / lowest - 1, g,
                         g, 100 * g / shape, rss, best["kmim"][0] / train if m != "kmim" else 1.0))
        print(f"done {name} k={k}", file=sys.stderr, flush=True)
peak = max(peak, sgemm()[0])

print(f"OpenBLAS sgemm peak (4096³, {threads} threads, best of the run): {peak:.1f} GFLOP/s; "
      f"peers: faiss-cpu {versions.get('faiss')}, scikit-learn {versions.get('sklearn')}, numpy {np.__version__}; "
      f"best of {rounds} interleaved rounds per method")
print()
print("| data | n×d | K | method | iters | train s | process wall s | final inertia | vs lowest | GFLOP/s | % sgemm peak | % sgemm at this shape | peak RSS MiB |")
print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:.6e} | {r[8]:+.1e} | "
          f"{r[9]:.1f} | {100 * r[10] / peak:.0f}% | {r[11]:.0f}% | {r[12]:.0f} |")
