// OpenBLAS thread control for code that calls sgemm from its own OpenMP threads.
#pragma once

#include <cblas.h>

namespace kmim::eval {

/// OpenBLAS runs single-threaded while it is called from our OpenMP threads (otherwise its thread
/// pool and OpenMP's would fight over the cores); the caller's setting is restored after.
class BlasSingleThreaded {
 public:
  BlasSingleThreaded() : saved_(openblas_get_num_threads()) {
    if (saved_ != 1) openblas_set_num_threads(1);
  }
  ~BlasSingleThreaded() {
    if (saved_ != 1) openblas_set_num_threads(saved_);
  }
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

 private:
  int saved_;
};

}  // namespace kmim::eval
