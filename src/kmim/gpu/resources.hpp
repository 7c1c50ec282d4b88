// RAII owners of CUDA resources: device memory, streams, events and cuBLAS handles.
//
// Free of CUDA headers, so plain C++ translation units (programs, tests, benchmarks) can hold
// these objects; the CUDA handle types are named through their opaque struct tags, which are the
// same types the CUDA headers use (cudaStream_t is CUstream_st*, cudaEvent_t is CUevent_st*,
// cublasHandle_t is cublasContext*). In a build without the CUDA backend every constructor that
// would touch the device throws kmim::Error("this kmim build has no CUDA backend ...").
//
// All objects belong to the device that was current when they were made (set_current_device);
// kmim uses one device per host thread (one rank per GPU, SPEC §6).
#pragma once

#include <cstddef>
#include <span>
#include <utility>
#include <vector>

struct CUstream_st;
struct CUevent_st;
struct cublasContext;

namespace kmim::gpu {

/// cudaSetDevice for this host thread. Throws kmim::Error naming the device on failure.
void set_current_device(int device);
/// cudaGetDevice.
int current_device();

/// cudaMalloc of `bytes` (0 gives nullptr). Throws kmim::Error with the size and CUDA's message.
void* device_allocate(std::size_t bytes);
/// Waits for the device, then cudaFree; null is fine. Never throws (destructors call it).
void device_free(void* pointer) noexcept;

/// A CUDA stream (non-blocking with respect to the legacy default stream). Move-only.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  Stream& operator=(Stream&& other) noexcept {
    std::swap(stream_, other.stream_);
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  CUstream_st* get() const { return stream_; }
  /// Waits for all work queued so far; throws kmim::Error if any of it failed.
  void synchronize() const;

 private:
  CUstream_st* stream_ = nullptr;
};

/// A CUDA event with timing enabled (benchmarks time device work with these, never with host
/// clocks around asynchronous calls).
class Event {
 public:
  Event();
  ~Event();
  Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  Event& operator=(Event&& other) noexcept {
    std::swap(event_, other.event_);
    return *this;
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(const Stream& stream);
  void synchronize() const;
  /// Milliseconds between `start` and this event (both recorded and complete).
  float elapsed_ms_since(const Event& start) const;
  CUevent_st* get() const { return event_; }

 private:
  CUevent_st* event_ = nullptr;
};

/// A cuBLAS handle. Its math mode is CUBLAS_DEFAULT_MATH (no TF32 unless a call asks for it).
class BlasHandle {
 public:
  BlasHandle();
  ~BlasHandle();
  BlasHandle(BlasHandle&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  BlasHandle& operator=(BlasHandle&& other) noexcept {
    std::swap(handle_, other.handle_);
    return *this;
  }
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;

  cublasContext* get() const { return handle_; }

 private:
  cublasContext* handle_ = nullptr;
};

/// Host↔device copies ordered on `stream`. Host memory is ordinary (pageable) memory, so the
/// host-to-device copy returns once the source has been consumed and copy_to_host returns once
/// the data has arrived (it synchronises the stream).
void copy_to_device(void* device_dst, const void* host_src, std::size_t bytes, const Stream& stream);
void copy_to_host(void* host_dst, const void* device_src, std::size_t bytes, const Stream& stream);
void copy_device_to_device(void* dst, const void* src, std::size_t bytes, const Stream& stream);
/// cudaMemsetAsync: every byte of [dst, dst + bytes) set to `byte` (tests poison outputs so).
void fill_device_bytes(void* device_dst, int byte, std::size_t bytes, const Stream& stream);

/// `count` elements of T in device memory. Move-only; contents are uninitialised.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count)
      : data_(static_cast<T*>(device_allocate(count * sizeof(T)))), size_(count) {}
  ~DeviceBuffer() { device_free(data_); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }

  /// Makes room for at least `count` elements; contents are not kept when it reallocates.
  void ensure_capacity(std::size_t count) {
    if (count > size_) *this = DeviceBuffer(count);
  }
  /// Copies `host` into the first host.size() elements.
  void upload(std::span<const T> host, const Stream& stream) {
    copy_to_device(data_, host.data(), host.size_bytes(), stream);
  }
  /// The first `count` elements (all when count is omitted), copied to the host.
  std::vector<T> download(const Stream& stream, std::size_t count = static_cast<std::size_t>(-1)) const {
    std::vector<T> host(count < size_ ? count : size_);
    copy_to_host(host.data(), data_, host.size() * sizeof(T), stream);
    return host;
  }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace kmim::gpu
