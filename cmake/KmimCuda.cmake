# Optional CUDA backend. KMIM_CUDA=AUTO turns it on when nvcc is found.
# Sets KMIM_HAVE_CUDA and, when on, the imported targets kmim_cuda_deps (cudart, cuBLAS,
# cuBLASLt, cuDNN, NCCL). The driver API (-lcuda) is never linked: only the runtime API.
include(CheckLanguage)
set(KMIM_HAVE_CUDA OFF)
if(NOT KMIM_CUDA STREQUAL "OFF")
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)  # H100/H200; "native" fails on machines without a GPU
  endif()
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    # CMake 3.25 predates nvcc's C++20 support and rejects CUDA_STANDARD 20 at generate time;
    # tell it the flag (kmim's headers use C++20 and are shared with .cu files).
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    find_library(KMIM_CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} REQUIRED)
    find_library(KMIM_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} REQUIRED)
    find_path(KMIM_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} REQUIRED)
    find_path(KMIM_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} REQUIRED)
    add_library(kmim_cuda_deps INTERFACE)
    target_include_directories(kmim_cuda_deps INTERFACE ${KMIM_CUDNN_INCLUDE} ${KMIM_NCCL_INCLUDE})
    target_link_libraries(kmim_cuda_deps INTERFACE CUDA::cudart CUDA::cublas CUDA::cublasLt
                          ${KMIM_CUDNN_LIBRARY} ${KMIM_NCCL_LIBRARY})
    set(KMIM_HAVE_CUDA ON)
    message(STATUS "kmim: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, sm_${CMAKE_CUDA_ARCHITECTURES})")
  elseif(KMIM_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KMIM_CUDA=ON but no CUDA compiler (nvcc) was found; install the CUDA "
                        "toolkit or configure with -DKMIM_CUDA=OFF")
  else()
    message(STATUS "kmim: CUDA backend OFF (nvcc not found)")
  endif()
else()
  message(STATUS "kmim: CUDA backend OFF (KMIM_CUDA=OFF)")
endif()
