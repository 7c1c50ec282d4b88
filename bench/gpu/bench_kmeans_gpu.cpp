// GPU K-means benchmark: nearest-centroid assignment and one full Lloyd iteration (assign +
// fp64 per-cluster sums + centroid update) of kmim::gpu on synthetic vectors resident on the
// device, timed with CUDA events (median of --repeats after one warm-up).
//
// Prints one line per measurement, for tests/gpu/run_device_checks.sh to tabulate next to the
// PyTorch peer (bench/gpu/torch_kmeans.py, same data generator, same line format):
//   RESULT impl=kmim op=assign|lloyd d=.. k=.. n=.. precision=fp32|tf32 ms=.. vec_per_s=..
//          tflops=.. mean_dist2=.. label_sum=.. [empty=.. relocated=..]
// tflops counts the assignment's 2·n·k·d multiply-adds only (for lloyd too). The Lloyd
// iteration includes kmim's empty-cluster relocation (empty= says how many clusters were empty;
// the PyTorch peer keeps empty centroids instead).
//
// A benchmark, not a pipeline program: plain main (no MPI), options through OptionSet.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/core/options.hpp"
#include "kmim/gpu/device.hpp"
#include "kmim/gpu/kmeans_assign.hpp"
#include "kmim/gpu/kmeans_lloyd.hpp"
#include "kmim/gpu/resources.hpp"
#include "synthetic_data.hpp"

namespace gpu = kmim::gpu;

namespace {

struct BenchParams {
  std::uint64_t n = std::uint64_t{1} << 22;          ///< vectors (4,194,304)
  std::vector<std::uint64_t> dims{768, 64};          ///< 768 = 16·16·3 pixel patches (SPEC §2)
  std::vector<std::uint64_t> ks{256, 1024, 8192};
  std::vector<std::string> precisions{"fp32", "tf32"};
  int repeats = 5;
  bool lloyd = true;                                 ///< also time full Lloyd iterations
  std::uint64_t tile_mib = 32;                       ///< AssignOptions::tile_bytes in MiB
  std::uint32_t seed = 1;
  int device = 0;
  std::string label = "kmim";                        ///< impl= name in the RESULT lines
};

template <class Work>
double median_ms(int repeats, const gpu::Stream& stream, Work&& work) {
  gpu::Event start, stop;
  work();  // warm-up: handles, workspaces, module load
  stream.synchronize();
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    start.record(stream);
    work();
    stop.record(stream);
    stop.synchronize();
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void report(const std::string& impl, const char* op, std::size_t d, std::size_t k, std::size_t n,
            std::string_view precision, double ms, const std::vector<float>& dist2,
            const std::vector<std::int32_t>& labels, const std::string& extra = "") {
  double sum = 0.0;
  for (const float v : dist2) sum += v;
  std::int64_t label_sum = 0;
  for (const auto l : labels) label_sum += l;
  const double flops = 2.0 * double(n) * double(k) * double(d);
  std::printf("RESULT impl=%s op=%s d=%zu k=%zu n=%zu precision=%.*s ms=%.3f vec_per_s=%.4e tflops=%.2f "
              "mean_dist2=%.6f label_sum=%lld%s\n",
              impl.c_str(), op, d, k, n, static_cast<int>(precision.size()), precision.data(), ms, double(n) / (ms * 1e-3),
              flops / (ms * 1e-3) / 1e12, sum / double(n), static_cast<long long>(label_sum), extra.c_str());
  std::fflush(stdout);
}

int run(int argc, char** argv) {
  BenchParams p;
  kmim::OptionSet opts("bench_kmeans_gpu", "Times GPU K-means assignment and Lloyd iterations.");
  opts.add("n", p.n, "vectors")
      .add("dims", p.dims, "vector dimensions to time")
      .add("ks", p.ks, "numbers of centroids to time")
      .add("precisions", p.precisions, "fp32 and/or tf32")
      .add("repeats", p.repeats, "timed repetitions (median reported)")
      .add("lloyd", p.lloyd, "also time full Lloyd iterations")
      .add("tile-mib", p.tile_mib, "distance tile budget per chunk (MiB)")
      .add("seed", p.seed, "data seed (centroids: seed + 1)")
      .add("device", p.device, "CUDA device")
      .add("label", p.label, "implementation name printed in the RESULT lines");
  if (!opts.parse(argc, argv)) return 0;
  opts.require("n", p.n >= 1, "must be at least 1");
  opts.require("repeats", p.repeats >= 1, "must be at least 1");
  for (const std::string& name : p.precisions) gpu::precision_from_name(name, "precisions");
  const auto status = gpu::query_devices();
  if (status.devices.empty()) {
    std::printf("SKIPPED: no CUDA device (%s)\n", status.reason.c_str());
    return 77;
  }
  gpu::set_current_device(p.device);
  for (const auto& dev : status.devices)
    if (dev.index == p.device)
      std::printf("DEVICE %s sm_%d%d %.1f GiB %d SMs\n", dev.name.c_str(), dev.compute_major, dev.compute_minor,
                  double(dev.memory_bytes) / double(1ull << 30), dev.multiprocessors);

  const std::size_t n = p.n;
  gpu::Stream stream;
  for (const std::uint64_t d : p.dims) {
    gpu::DeviceBuffer<float> x(n * d);
    kmim_bench::generate_synthetic(x.data(), n, d, p.seed, stream);
    gpu::DeviceBuffer<std::int32_t> labels(n);
    gpu::DeviceBuffer<float> dist2(n);
    for (const std::uint64_t k : p.ks) {
      gpu::DeviceBuffer<float> c0(k * d), c(k * d);
      kmim_bench::generate_synthetic(c0.data(), k, d, p.seed + 1, stream);
      for (const std::string& name : p.precisions) {
        gpu::AssignOptions options;
        options.precision = gpu::precision_from_name(name, "precisions");
        options.tile_bytes = p.tile_mib << 20;
        gpu::CentroidAssigner assigner(options);
        const double ms = median_ms(p.repeats, stream, [&] {
          assigner.assign(x.data(), n, d, c0.data(), k, labels.data(), dist2.data(), stream);
        });
        report(p.label, "assign", d, k, n, gpu::precision_name(options.precision), ms, dist2.download(stream),
               labels.download(stream));
        if (!p.lloyd) continue;
        gpu::LloydIteration it(k, d, options);
        gpu::Event start, stop;
        std::vector<double> times;
        gpu::CentroidUpdate last;
        for (int r = 0; r <= p.repeats; ++r) {  // r = 0 is the warm-up
          gpu::copy_device_to_device(c.data(), c0.data(), c.bytes(), stream);
          stream.synchronize();
          start.record(stream);
          it.assign_and_accumulate(x.data(), n, c.data(), stream);
          last = it.update(c.data(), stream);  // waits for the stream (returns counts)
          stop.record(stream);
          stop.synchronize();
          if (r > 0) times.push_back(stop.elapsed_ms_since(start));
        }
        std::sort(times.begin(), times.end());
        std::vector<float> it_dist2(n);
        std::vector<std::int32_t> it_labels(n);
        gpu::copy_to_host(it_dist2.data(), it.dist2(), n * sizeof(float), stream);
        gpu::copy_to_host(it_labels.data(), it.labels(), n * sizeof(std::int32_t), stream);
        report(p.label, "lloyd", d, k, n, gpu::precision_name(options.precision), times[times.size() / 2], it_dist2,
               it_labels, " empty=" + std::to_string(last.empty_clusters) + " relocated=" + std::to_string(last.relocated));
      }
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_kmeans_gpu: %s\n", e.what());
    return 1;
  }
}
