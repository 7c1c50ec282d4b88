"""One K-means run of a peer library, in its own process (bench/kmeans/run_bench.py measures its
wall time and peak memory). Not a test.

    python peer.py faiss|sklearn DATA.h5 INIT.h5 ITERS THREADS OUT.npy

Prints one JSON line: {"train_s": fit time, "n_iter": iterations run, "version": ...};
the final centroids go to OUT.npy."""
import json
import os
import sys
import time

method, data_path, init_path, iters, threads, out = sys.argv[1:7]
iters, threads = int(iters), int(threads)
os.environ["OMP_NUM_THREADS"] = str(threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
os.environ["MKL_NUM_THREADS"] = str(threads)

import h5py  # noqa: E402
import numpy as np  # noqa: E402

with h5py.File(data_path, "r") as f:
    x = np.ascontiguousarray(f["features"][...], dtype=np.float32)
with h5py.File(init_path, "r") as f:
    c0 = np.ascontiguousarray(f["centroids"][...], dtype=np.float32)
k, d = c0.shape

if method == "faiss":
    import faiss

    faiss.omp_set_num_threads(threads)
    # All points (no subsampling), exactly `iters` iterations from the given centroids.
    km = faiss.Kmeans(d, k, niter=iters, seed=1, max_points_per_centroid=1 << 30,
                      min_points_per_centroid=1, verbose=False)
    t0 = time.perf_counter()
    km.train(x, init_centroids=c0)
    train_s = time.perf_counter() - t0
    centroids, n_iter, version = km.centroids, iters, faiss.__version__
elif method == "sklearn":
    import sklearn
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        km = KMeans(n_clusters=k, init=c0, n_init=1, max_iter=iters, tol=0.0, algorithm="lloyd")
        t0 = time.perf_counter()
        km.fit(x)
        train_s = time.perf_counter() - t0
    centroids, n_iter, version = km.cluster_centers_.astype(np.float32), int(km.n_iter_), sklearn.__version__
else:
    sys.exit(f"unknown method {method}")

np.save(out, centroids)
print(json.dumps({"train_s": train_s, "n_iter": n_iter, "version": version}))
