# Every third-party dependency of kmim, found once, exposed as imported targets.
# scripts/install_deps.sh installs all of them on Debian 12.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

# MPI: every program is an MPI program (runs as a singleton without mpirun).
find_package(MPI 3.0 REQUIRED COMPONENTS C CXX)

# Parallel HDF5: shards, codebooks, checkpoints. The serial build cannot open files
# collectively, so finding it is an error rather than a silent fallback.
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 1.10 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR
    "kmim needs the parallel (MPI) build of HDF5, but the HDF5 found at '${HDF5_INCLUDE_DIRS}' is "
    "serial. On Debian install libhdf5-openmpi-dev (scripts/install_deps.sh does), or point "
    "HDF5_ROOT at a parallel build.")
endif()
add_library(kmim_hdf5 INTERFACE)
install(TARGETS kmim_hdf5 EXPORT kmimTargets)
# HDF5::HDF5 lacks MPI's include directories; <hdf5.h> includes <mpi.h>.
target_link_libraries(kmim_hdf5 INTERFACE HDF5::HDF5 MPI::MPI_C)

find_package(Boost 1.74 REQUIRED COMPONENTS program_options unit_test_framework)

# libjpeg-turbo's TurboJPEG API (version 2: tjDecompress2/tjCompress2).
pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
# stb (Debian libstb-dev): antialiased image resize and PNG decoding.
pkg_check_modules(STB REQUIRED IMPORTED_TARGET stb)
# OpenBLAS: sgemm for K-means distances and the CPU transformer.
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
# fmt (formatting) and nlohmann_json (metrics, manifests of options).
find_package(fmt 9 REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(ZLIB REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
