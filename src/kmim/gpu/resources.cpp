#include "kmim/gpu/resources.hpp"

#include <string>

#include "kmim/gpu/cuda_status.hpp"

namespace kmim::gpu {

using detail::check_cublas;
using detail::check_cuda;

void set_current_device(int device) {
  const cudaError_t rc = cudaSetDevice(device);
  if (rc != cudaSuccess)
    throw Error("CUDA: cannot use device " + std::to_string(device) + ": " + cudaGetErrorString(rc));
}

int current_device() {
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  return device;
}

void* device_allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t rc = cudaMalloc(&p, bytes);
  if (rc != cudaSuccess) {
    cudaGetLastError();  // an allocation failure is not sticky; clear it for later calls
    throw Error("CUDA: cannot allocate " + std::to_string(bytes) + " bytes of device memory: " +
                cudaGetErrorString(rc));
  }
  return p;
}

void device_free(void* pointer) noexcept {
  if (pointer == nullptr) return;
  // Kernels queued on any stream may still read the buffer (workspaces are reallocated between
  // asynchronous calls): wait for the device explicitly rather than rely on cudaFree doing so.
  cudaDeviceSynchronize();
  cudaFree(pointer);
}

Stream::Stream() { check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
Stream::~Stream() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}
void Stream::synchronize() const { check_cuda(cudaStreamSynchronize(stream_), "stream synchronize"); }

Event::Event() { check_cuda(cudaEventCreate(&event_), "cudaEventCreate"); }
Event::~Event() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}
void Event::record(const Stream& stream) { check_cuda(cudaEventRecord(event_, stream.get()), "cudaEventRecord"); }
void Event::synchronize() const { check_cuda(cudaEventSynchronize(event_), "cudaEventSynchronize"); }
float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0.0f;
  check_cuda(cudaEventElapsedTime(&ms, start.event_, event_), "cudaEventElapsedTime");
  return ms;
}

BlasHandle::BlasHandle() {
  check_cublas(cublasCreate(&handle_), "cublasCreate");
  // Explicitly the default (no TF32): FP32 GEMMs stay IEEE fp32 unless a call requests
  // CUBLAS_COMPUTE_32F_FAST_TF32.
  const cublasStatus_t rc = cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH);
  if (rc != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(handle_);
    handle_ = nullptr;
    check_cublas(rc, "cublasSetMathMode");
  }
}
BlasHandle::~BlasHandle() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes, const Stream& stream) {
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream.get()),
             "copy to device");
}

void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes, const Stream& stream) {
  if (bytes > 0)
    check_cuda(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, stream.get()),
               "copy to host");
  stream.synchronize();
}

void copy_device_to_device(void* dst, const void* src, std::size_t bytes, const Stream& stream) {
  if (bytes == 0) return;
  check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream.get()), "device copy");
}

void fill_device_bytes(void* device_dst, int byte, std::size_t bytes, const Stream& stream) {
  if (bytes == 0) return;
  check_cuda(cudaMemsetAsync(device_dst, byte, bytes, stream.get()), "cudaMemsetAsync");
}

}  // namespace kmim::gpu
