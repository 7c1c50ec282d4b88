#!/usr/bin/env bash
# Installs every Debian 12 package kmim's build, tests and demo need. Idempotent: when all
# packages are present it prints nothing and exits 0 without touching apt.
#
#   scripts/install_deps.sh             build + tests + demo
#   scripts/install_deps.sh --bench     also the benchmark peers (faiss, scikit-learn, PyTorch
#                                       CPU) into bench/.venv from PyPI, Debian's python3-faiss /
#                                       python3-sklearn / python3-torch as the fallback
#
# Run as root (or with sudo available). CUDA (nvcc, cuBLAS, cuDNN, NCCL) is not installed
# here: kmim builds without it and uses it when /usr/local/cuda is present.
set -euo pipefail

bench=0
for arg in "$@"; do
  case "$arg" in
    --bench) bench=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install_deps.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake pkg-config git ca-certificates
  openmpi-bin libopenmpi-dev                 # MPI: every program runs under mpirun/srun
  libhdf5-openmpi-dev hdf5-tools             # parallel HDF5 (shards, codebooks, checkpoints); h5dump
  libboost-program-options-dev libboost-test-dev   # CLI options; unit tests
  libturbojpeg0-dev libjpeg-dev              # JPEG decode/encode (libjpeg-turbo)
  libstb-dev                                 # image resize (antialiased bicubic), PNG decode
  libopenblas-dev                            # sgemm for K-means and the CPU transformer
  libfmt-dev nlohmann-json3-dev zlib1g-dev   # formatting, JSON metrics, gzip'd IDX files
  dataset-fashion-mnist                      # the demo's real images
  python3 python3-numpy python3-h5py         # tests read our HDF5 as downstream users do
  python3-sklearn                            # linear-probe reference in the evaluation tests
  python3-torch                              # tools/convert_timm_vit.py and its reference-ViT test
  gnuplot-nox                                # kmim_report plots
  munge slurm-wlm slurmctld slurmd slurm-client    # a real local Slurm for the job tests
  procps psmisc time                         # ps/pkill-free process checks, /usr/bin/time
)
bench_packages=(python3-venv python3-pip python3-faiss)

wanted=("${packages[@]}")
[ "$bench" = 1 ] && wanted+=("${bench_packages[@]}")
# Strip the comments that bash already dropped; find what is missing.
missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "install_deps.sh: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$bench" = 1 ]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="$here/bench/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    echo "install_deps.sh: creating $venv with faiss-cpu, scikit-learn, torch (CPU), timm"
    python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install -q --upgrade pip || true
    # Current releases from PyPI; Debian's python3-faiss / python3-sklearn / python3-torch
    # (system site packages) remain visible as the fallback when a wheel cannot be installed.
    "$venv/bin/pip" install -q faiss-cpu scikit-learn threadpoolctl || echo "install_deps.sh: warning: faiss-cpu/scikit-learn from PyPI failed; Debian's packages will be used"
    "$venv/bin/pip" install -q torch || echo "install_deps.sh: warning: torch from PyPI failed; Debian's python3-torch will be used"
    "$venv/bin/pip" install -q timm || true
  fi
fi
