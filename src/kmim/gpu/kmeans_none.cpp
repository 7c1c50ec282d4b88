// The GPU K-means API in builds without the CUDA backend (KMIM_CUDA=OFF or no nvcc): the same
// declarations, so callers need no #ifdefs; everything that would touch a device throws.
// Host-only helpers (kmeans_options.cpp) work in both builds.
#include "kmim/core/error.hpp"
#include "kmim/gpu/kmeans_assign.hpp"
#include "kmim/gpu/kmeans_lloyd.hpp"
#include "kmim/gpu/kmeans_patches.hpp"
#include "kmim/gpu/kmeans_reduce.hpp"
#include "kmim/gpu/nccl_communicator.hpp"
#include "kmim/gpu/resources.hpp"

namespace kmim::gpu {
namespace {

[[noreturn]] void no_cuda() {
  throw Error("this kmim build has no CUDA backend (configure with -DKMIM_CUDA=ON)");
}

}  // namespace

void set_current_device(int) { no_cuda(); }
int current_device() { no_cuda(); }
void* device_allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  no_cuda();
}
void device_free(void*) noexcept {}

Stream::Stream() { no_cuda(); }
Stream::~Stream() = default;
void Stream::synchronize() const { no_cuda(); }
Event::Event() { no_cuda(); }
Event::~Event() = default;
void Event::record(const Stream&) { no_cuda(); }
void Event::synchronize() const { no_cuda(); }
float Event::elapsed_ms_since(const Event&) const { no_cuda(); }
BlasHandle::BlasHandle() { no_cuda(); }
BlasHandle::~BlasHandle() = default;

void copy_to_device(void*, const void*, std::size_t, const Stream&) { no_cuda(); }
void copy_to_host(void*, const void*, std::size_t, const Stream&) { no_cuda(); }
void copy_device_to_device(void*, const void*, std::size_t, const Stream&) { no_cuda(); }
void fill_device_bytes(void*, int, std::size_t, const Stream&) { no_cuda(); }

void compute_row_norms2(const float*, std::size_t, std::size_t, float*, const Stream&) { no_cuda(); }

struct CentroidAssigner::Workspace {};
CentroidAssigner::CentroidAssigner(AssignOptions options) : options_(options) { no_cuda(); }
CentroidAssigner::~CentroidAssigner() = default;
CentroidAssigner::CentroidAssigner(CentroidAssigner&&) noexcept = default;
CentroidAssigner& CentroidAssigner::operator=(CentroidAssigner&&) noexcept = default;
void CentroidAssigner::assign(const float*, std::size_t, std::size_t, const float*, std::size_t, std::int32_t*,
                              float*, const Stream&, const float*, const float*) {
  no_cuda();
}
void assign_nearest_centroid(const float*, std::size_t, std::size_t, const float*, std::size_t, std::int32_t*,
                             float*, const float*, const AssignOptions&) {
  no_cuda();
}

ClusterStatistics::ClusterStatistics(std::size_t k, std::size_t d) : k_(k), d_(d) { no_cuda(); }
void ClusterStatistics::clear(const Stream&) { no_cuda(); }
ClusterStatistics::Host ClusterStatistics::download(const Stream&) const { no_cuda(); }

struct ClusterAccumulator::Workspace {};
ClusterAccumulator::ClusterAccumulator() { no_cuda(); }
ClusterAccumulator::~ClusterAccumulator() = default;
ClusterAccumulator::ClusterAccumulator(ClusterAccumulator&&) noexcept = default;
ClusterAccumulator& ClusterAccumulator::operator=(ClusterAccumulator&&) noexcept = default;
void ClusterAccumulator::add(const float*, std::size_t, const std::int32_t*, const float*, ClusterStatistics&,
                             const Stream&) {
  no_cuda();
}

CentroidUpdate update_centroids(const ClusterStatistics&, float*, const Stream&) { no_cuda(); }

LloydIteration::LloydIteration(std::size_t k, std::size_t d, AssignOptions options)
    : k_(k), d_(d), assigner_(options), stats_(k, d) {}
void LloydIteration::assign_and_accumulate(const float*, std::size_t, const float*, const Stream&, const float*) {
  no_cuda();
}
CentroidUpdate LloydIteration::update(float*, const Stream&, const RankContext&, EmptyClusterPolicy) { no_cuda(); }

PatchExtractor::PatchExtractor(const kmeans::PatchGeometry& geometry, const kmeans::PixelNormalization&)
    : geometry_(geometry) {
  no_cuda();
}
std::size_t PatchExtractor::output_rows(std::size_t, std::span<const std::uint32_t>, std::size_t) const {
  no_cuda();
}
void PatchExtractor::extract(const std::uint8_t*, std::size_t, int, int, std::span<const std::uint32_t>,
                             std::size_t, float*, const Stream&) {
  no_cuda();
}

NcclCommunicator::NcclCommunicator(int, int, const BroadcastFromRoot&) { no_cuda(); }
NcclCommunicator::NcclCommunicator(const dist::Communicator&) { no_cuda(); }
NcclCommunicator::~NcclCommunicator() = default;
void NcclCommunicator::allreduce_sum(double*, std::size_t, const Stream&) const { no_cuda(); }
int select_device_for_rank(const dist::Communicator&) { no_cuda(); }
void allreduce_cluster_statistics(ClusterStatistics&, const NcclCommunicator&, const Stream&) { no_cuda(); }
void allreduce_cluster_statistics(ClusterStatistics&, const dist::Communicator&, const Stream&) { no_cuda(); }
RankContext rank_context(const dist::Communicator&, std::uint64_t) { no_cuda(); }

}  // namespace kmim::gpu
