// K-means library tests on one rank: patch extraction, permutations, seeding, Lloyd, empty
// clusters, mini-batch steps, checkpoints/resume, codebook files.
#define BOOST_TEST_MODULE kmeans
#include <boost/test/unit_test.hpp>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "kmeans_test_data.hpp"
#include "kmim/core/error.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/kmeans/assign.hpp"
#include "kmim/kmeans/checkpoint.hpp"
#include "kmim/kmeans/codebook.hpp"
#include "kmim/kmeans/local_vectors.hpp"
#include "kmim/kmeans/patches.hpp"
#include "kmim/kmeans/permutation.hpp"
#include "kmim/kmeans/train.hpp"

namespace fs = std::filesystem;
using namespace kmim;
using namespace kmim::kmeans;
using kmim::kmeans::testing::blob_vectors;
using kmim::kmeans::testing::normal_vectors;

struct MpiFixture {
  dist::MpiSession session;
};
BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

namespace {

fs::path scratch_dir() {
  const fs::path dir = fs::temp_directory_path() / fmt::format("kmim_test_kmeans_{}", ::getpid());
  fs::create_directories(dir);
  return dir;
}

/// Runs training to completion from the initial state.
TrainState run(VectorSource& source, const TrainConfig& config, std::uint64_t memory_limit = 1ull << 40) {
  const dist::Communicator comm;
  LocalVectors data(source, comm, memory_limit);
  TrainState state = initial_state(data, config, comm);
  train_kmeans(data, config, comm, state);
  return state;
}

}  // namespace

// ---- patches ---------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(patch_vectors_follow_row_col_channel_order) {
  // A 7×6 (h×w) RGB image whose every byte is distinct: value(y, x, c) = 40y + 6x + 2c + 1.
  const int h = 7, w = 6;
  std::vector<std::uint8_t> image(static_cast<std::size_t>(h * w * 3));
  auto value = [](int y, int x, int c) { return static_cast<std::uint8_t>(40 * y + 6 * x + 2 * c + 1); };
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) image[static_cast<std::size_t>((y * w + x) * 3 + c)] = value(y, x, c);
  // Crop 4 centred: top = round(1.5) = 2, left = round(1.0) = 1. Patch 2 → a 2×2 grid.
  const PatchGeometry g{4, 2, 3};
  const auto norm = PixelNormalization::imagenet();
  std::vector<float> out(4 * g.dim());
  extract_patches(image.data(), h, w, g, norm, {}, out.data());
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  for (int tile = 0; tile < 4; ++tile) {
    const int ty = tile / 2, tx = tile % 2;
    for (int py = 0; py < 2; ++py)
      for (int px = 0; px < 2; ++px)
        for (int c = 0; c < 3; ++c) {
          const float expected = (static_cast<float>(value(2 + ty * 2 + py, 1 + tx * 2 + px, c)) / 255.0f - mean[c]) / sd[c];
          BOOST_TEST(out[static_cast<std::size_t>(tile) * g.dim() + static_cast<std::size_t>((py * 2 + px) * 3 + c)] == expected);
        }
  }
  // A tile subset in a given order, and no normalisation (x / 255).
  const std::vector<std::uint32_t> tiles = {3, 0};
  std::vector<float> sub(2 * g.dim());
  extract_patches(image.data(), h, w, g, PixelNormalization::none(), tiles, sub.data());
  BOOST_TEST(sub[0] == static_cast<float>(value(4, 3, 0)) / 255.0f);  // tile 3: top-left pixel (2+2, 1+2)
  BOOST_TEST(sub[g.dim() + 5] == static_cast<float>(value(2, 2, 2)) / 255.0f);  // tile 0, (py 0, px 1, ch 2)
  BOOST_TEST(sub[g.dim() + 11] == static_cast<float>(value(3, 2, 2)) / 255.0f);
  // The byte form (the pixel-mode cache) holds the same pixels in the same order; decoding it
  // with PixelNormalization::apply gives exactly extract_patches' values.
  std::vector<std::uint8_t> bytes(4 * g.dim());
  extract_patch_bytes(image.data(), h, w, g, {}, bytes.data());
  for (std::size_t i = 0; i < bytes.size(); ++i)
    BOOST_TEST(norm.apply(bytes[i], static_cast<int>(i % 3)) == out[i], "value " << i);
  BOOST_TEST(bytes[0] == value(2, 1, 0));
}

BOOST_AUTO_TEST_CASE(patch_geometry_is_checked) {
  BOOST_CHECK_THROW((PatchGeometry{224, 15, 3}.validate(256)), OptionError);
  BOOST_CHECK_THROW((PatchGeometry{288, 16, 3}.validate(256)), OptionError);
  BOOST_CHECK_NO_THROW((PatchGeometry{224, 16, 3}.validate(256)));
  BOOST_TEST((PatchGeometry{224, 16, 3}.dim()) == 768u);
  BOOST_TEST((PatchGeometry{224, 16, 3}.patches_per_image()) == 196);
  BOOST_CHECK_THROW(PixelNormalization::from_name("zscore"), OptionError);
}

BOOST_AUTO_TEST_CASE(tile_samples_are_distinct_sorted_and_keyed_by_image) {
  const auto a = sample_tiles(5, 17, 196, 10);
  BOOST_TEST(a.size() == 10u);
  BOOST_TEST(std::is_sorted(a.begin(), a.end()));
  BOOST_TEST(std::set<std::uint32_t>(a.begin(), a.end()).size() == 10u);
  BOOST_TEST(a.back() < 196u);
  BOOST_TEST(sample_tiles(5, 17, 196, 10) == a);
  BOOST_TEST(sample_tiles(5, 18, 196, 10) != a);
  BOOST_TEST(sample_tiles(6, 17, 196, 10) != a);
  BOOST_TEST(sample_tiles(5, 17, 4, 9).size() == 4u);
}

BOOST_AUTO_TEST_CASE(index_permutation_is_a_seeded_bijection) {
  for (const std::uint64_t n : {1ull, 2ull, 3ull, 17ull, 1000ull, 4097ull}) {
    IndexPermutation p(n, 3, 9);
    std::vector<char> seen(n, 0);
    for (std::uint64_t i = 0; i < n; ++i) {
      const auto v = p(i);
      BOOST_REQUIRE(v < n);
      BOOST_TEST(!seen[v]);
      seen[v] = 1;
    }
  }
  IndexPermutation a(1000, 3, 9), b(1000, 3, 9), c(1000, 4, 9);
  int same = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) {
    BOOST_TEST(a(i) == b(i));
    same += a(i) == c(i);
  }
  BOOST_TEST(same < 20);
}

BOOST_AUTO_TEST_CASE(byte_sizes_parse) {
  BOOST_TEST(parse_byte_size("8G", "m") == 8ull << 30);
  BOOST_TEST(parse_byte_size("512M", "m") == 512ull << 20);
  BOOST_TEST(parse_byte_size("1.5k", "m") == 1536u);
  BOOST_TEST(parse_byte_size("123", "m") == 123u);
  BOOST_CHECK_THROW(parse_byte_size("lots", "m"), OptionError);
  BOOST_CHECK_THROW(parse_byte_size("8X", "m"), OptionError);
}

// ---- seeding and Lloyd ---------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(kmeans_plus_plus_seeds_one_centroid_per_separated_blob) {
  const std::size_t blobs = 6, d = 5;
  const auto x = blob_vectors(blobs, 50, d, 1);
  const auto c = kmeans_plus_plus(x.data(), blobs * 50, d, blobs, 42);
  BOOST_TEST(kmeans_plus_plus(x.data(), blobs * 50, d, blobs, 42) == c);
  // Each seed is a data point, and the seeds fall in distinct blobs.
  std::vector<float> means(blobs * d, 0.0f);
  std::vector<std::int32_t> labels(blobs);
  std::vector<float> dist(blobs);
  std::vector<float> first_points(x.begin(), x.begin() + static_cast<std::ptrdiff_t>(blobs * d));
  assign_nearest_centroid_reference(c.data(), blobs, d, first_points.data(), blobs, labels.data(), dist.data());
  BOOST_TEST(std::set<std::int32_t>(labels.begin(), labels.end()).size() == blobs);
}

BOOST_AUTO_TEST_CASE(lloyd_recovers_well_separated_blobs_exactly) {
  const std::size_t blobs = 7, per_blob = 300, d = 12;
  std::vector<double> means;
  MemoryVectorSource source(blob_vectors(blobs, per_blob, d, 3, &means), d);
  TrainConfig config;
  config.k = blobs;
  config.iters = 20;
  config.tol = 0;
  const TrainState state = run(source, config);
  // Every true mean has a centroid equal to it (to float rounding), and vice versa.
  std::vector<int> used(blobs, 0);
  for (std::size_t b = 0; b < blobs; ++b) {
    std::size_t best = 0;
    double best_d = 1e300;
    for (std::size_t j = 0; j < blobs; ++j) {
      double s = 0;
      for (std::size_t t = 0; t < d; ++t) s += std::pow(state.centroids[j * d + t] - means[b * d + t], 2);
      if (s < best_d) best_d = s, best = j;
    }
    BOOST_TEST(best_d < 1e-8);
    ++used[best];
  }
  BOOST_TEST(std::all_of(used.begin(), used.end(), [](int u) { return u == 1; }));
  const dist::Communicator comm;
  LocalVectors data(source, comm, 1ull << 40);
  const auto final = final_assignment(data, state.centroids, blobs, comm);
  for (const auto s : final.cluster_sizes) BOOST_TEST(s == static_cast<std::int64_t>(per_blob));
}

BOOST_AUTO_TEST_CASE(lloyd_inertia_never_increases) {
  const std::size_t n = 4000, d = 6;
  MemoryVectorSource source(normal_vectors(n, d, 5), d);
  for (const auto init : {InitMethod::kmeans_plus_plus, InitMethod::random}) {
    TrainConfig config;
    config.k = 40;
    config.iters = 25;
    config.tol = 0;
    config.init = init;
    const TrainState state = run(source, config);
    BOOST_REQUIRE(state.inertia.size() == 25u);
    for (std::size_t t = 1; t < state.inertia.size(); ++t)
      BOOST_TEST(state.inertia[t] <= state.inertia[t - 1] * (1 + 1e-6), "iteration " << t + 1);
    BOOST_TEST(state.inertia.back() < state.inertia.front());
  }
}

BOOST_AUTO_TEST_CASE(empty_cluster_takes_the_farthest_point_whose_cluster_survives) {
  // 1-D points 0, 1, 2, 10; centroids 0.5, 100 (gets nothing), 5. Assignment: {0,1,2} → 0,
  // {10} → 2. Farthest point: 10 (distance² 25) but its cluster would be left empty, so the next
  // one, 2 (distance² 2.25), moves to cluster 1; cluster 0 becomes mean(0, 1).
  MemoryVectorSource source({0.0f, 1.0f, 2.0f, 10.0f}, 1);
  const dist::Communicator comm;
  LocalVectors data(source, comm, 1 << 20);
  TrainConfig config;
  config.k = 3;
  TrainState state;
  state.centroids = {0.5, 100.0, 5.0};
  const auto report = lloyd_iteration(data, config, comm, state);
  BOOST_TEST(report.events == 1);
  BOOST_TEST(state.empty_events == std::vector<std::int64_t>{1});
  BOOST_TEST(state.centroids[0] == 0.5);
  BOOST_TEST(state.centroids[1] == 2.0);
  BOOST_TEST(state.centroids[2] == 10.0);
  BOOST_TEST(report.inertia == 0.25 + 0.25 + 2.25 + 25.0);
  // Next iteration: no empty cluster, inertia 0.5.
  const auto next = lloyd_iteration(data, config, comm, state);
  BOOST_TEST(next.events == 0);
  BOOST_TEST(next.inertia == 0.5);
}

BOOST_AUTO_TEST_CASE(results_do_not_depend_on_threads_or_caching) {
  const std::size_t n = 3000, d = 9;
  MemoryVectorSource source(normal_vectors(n, d, 8), d, 3);  // 1000 items × 3 vectors
  TrainConfig config;
  config.k = 25;
  config.iters = 8;
  config.tol = 0;
  const TrainState cached = run(source, config);
  const TrainState streamed = run(source, config, /*memory_limit=*/0);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const TrainState one_thread = run(source, config);
  omp_set_num_threads(saved);
  BOOST_TEST(cached.centroids == streamed.centroids);
  BOOST_TEST(cached.centroids == one_thread.centroids);
  BOOST_TEST(cached.inertia == one_thread.inertia);
}

// ---- mini-batch ------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(minibatch_step_follows_the_per_centre_learning_rate) {
  const dist::Communicator comm;
  TrainConfig config;
  config.k = 2;
  config.algorithm = Algorithm::minibatch;
  TrainState state;
  state.centroids = {0, 0, 10, 10};
  state.counts = {3, 1};
  const std::vector<float> x = {1, 1, 2, 0, 9, 9};
  const std::vector<std::uint64_t> positions = {0, 1, 2};
  const auto r = minibatch_step(x.data(), 3, 2, positions, 3, 0, config, comm, state);
  // Centre 0: batch mean (1.5, 0.5), b = 2, n = 3 + 2 → c + (m - c) * 2/5 = (0.6, 0.2).
  // Centre 1: batch mean (9, 9), b = 1, n = 2 → (10, 10) + (-1, -1) / 2 = (9.5, 9.5).
  BOOST_TEST(r.inertia == 2.0 + 4.0 + 2.0);
  BOOST_TEST(r.reassigned == 0);
  BOOST_TEST(std::abs(state.centroids[0] - 0.6) < 1e-12);
  BOOST_TEST(std::abs(state.centroids[1] - 0.2) < 1e-12);
  BOOST_TEST(state.centroids[2] == 9.5);
  BOOST_TEST(state.centroids[3] == 9.5);
  BOOST_TEST(state.counts == (std::vector<std::int64_t>{5, 2}));
  BOOST_TEST(state.since_reassign == 3);
}

BOOST_AUTO_TEST_CASE(minibatch_reassigns_low_count_centres_to_batch_vectors) {
  const dist::Communicator comm;
  TrainConfig config;
  config.k = 3;
  config.algorithm = Algorithm::minibatch;
  TrainState state;
  state.centroids = {0, 0, 50, 50, -50, 50};
  state.counts = {1000, 5, 1};  // 1 < 0.01 * max → centre 2 is reassigned; 5 too
  state.since_reassign = 100;   // >= 10 k: a reassignment step
  const std::vector<float> x = {1, 0, 0, 1, -1, 0, 0, -1};
  const std::vector<std::uint64_t> positions = {0, 1, 2, 3};
  const auto r = minibatch_step(x.data(), 4, 2, positions, 4, 7, config, comm, state);
  BOOST_TEST(r.reassigned == 2);
  BOOST_TEST(state.since_reassign == 0);
  // Centre 0 got all four points: (0*1000 + 0) / 1004 = 0. Centres 1 and 2 moved onto two
  // distinct batch vectors; their counts restart at the smallest kept count (centre 0's, 1004).
  BOOST_TEST(state.centroids[0] == 0.0);
  BOOST_TEST(state.counts == (std::vector<std::int64_t>{1004, 1004, 1004}));
  std::set<std::pair<double, double>> batch = {{1, 0}, {0, 1}, {-1, 0}, {0, -1}};
  const std::pair<double, double> c1{state.centroids[2], state.centroids[3]}, c2{state.centroids[4], state.centroids[5]};
  BOOST_TEST(batch.count(c1) == 1u);
  BOOST_TEST(batch.count(c2) == 1u);
  BOOST_TEST((c1 != c2));
}

BOOST_AUTO_TEST_CASE(minibatch_converges_on_blobs) {
  const std::size_t blobs = 5, d = 4;
  std::vector<double> means;
  MemoryVectorSource source(blob_vectors(blobs, 400, d, 11, &means), d, 4);  // 500 items × 4
  TrainConfig config;
  config.k = blobs;
  config.algorithm = Algorithm::minibatch;
  config.batch_items = 50;
  config.passes = 5;
  config.tol = 0;
  const TrainState state = run(source, config);
  BOOST_TEST(state.completed == 5);
  for (std::size_t b = 0; b < blobs; ++b) {
    double best = 1e300;
    for (std::size_t j = 0; j < blobs; ++j) {
      double s = 0;
      for (std::size_t t = 0; t < d; ++t) s += std::pow(state.centroids[j * d + t] - means[b * d + t], 2);
      best = std::min(best, s);
    }
    BOOST_TEST(best < 0.05);  // each blob mean is found (a streaming average, not exact)
  }
}

// ---- checkpoints, resume, codebook files --------------------------------------------------

BOOST_AUTO_TEST_CASE(resume_from_checkpoint_is_bit_identical) {
  const fs::path dir = scratch_dir();
  MemoryVectorSource source(normal_vectors(6000, 8, 21), 8, 2);
  for (const auto algorithm : {Algorithm::lloyd, Algorithm::minibatch}) {
    TrainConfig config;
    config.k = 30;
    config.algorithm = algorithm;
    config.iters = 6;
    config.passes = 6;
    config.batch_items = 200;
    config.tol = 0;
    config.init = InitMethod::random;
    const TrainState full = run(source, config);

    const dist::Communicator comm;
    LocalVectors data(source, comm, 1ull << 40);
    TrainConfig first_half = config;
    first_half.iters = first_half.passes = 3;
    TrainState state = initial_state(data, first_half, comm);
    train_kmeans(data, first_half, comm, state);
    const fs::path ckpt = dir / "resume.ckpt.h5";
    save_checkpoint(ckpt, state, "identity\n", "test", "");
    TrainState resumed = load_checkpoint(ckpt, "identity\n", config.k, 8);
    BOOST_CHECK_THROW(load_checkpoint(ckpt, "other\n", config.k, 8), FileError);
    train_kmeans(data, config, comm, resumed);
    BOOST_TEST(resumed.completed == 6);
    BOOST_TEST(resumed.centroids == full.centroids);
    BOOST_TEST(resumed.inertia == full.inertia);
    BOOST_TEST(resumed.counts == full.counts);
  }
  fs::remove_all(dir);
}

BOOST_AUTO_TEST_CASE(codebook_round_trip_and_validation) {
  const fs::path dir = scratch_dir();
  Codebook c;
  c.k = 2;
  c.d = 12;
  c.mode = "pixel";
  c.patch_size = 2;
  c.crop = 4;
  c.channels = 3;
  c.normalization = PixelNormalization::imagenet();
  c.centroids.resize(24);
  for (std::size_t i = 0; i < 24; ++i) c.centroids[i] = 0.5f * static_cast<float>(i);
  c.cluster_sizes = {3, 4};
  c.inertia = {10.0, 9.0};
  c.empty_cluster_events = {1, 0};
  c.final_inertia = 8.5;
  c.algorithm = "lloyd";
  c.init = "kmeans++";
  c.seed = 7;
  c.iterations = 2;
  c.input = "x.h5";
  c.input_fingerprint = "abc";
  const fs::path file = dir / "codebook.h5";
  c.save(file, "test", "k = 2\n");
  const Codebook r = Codebook::load(file);
  BOOST_TEST(r.centroids == c.centroids);
  BOOST_TEST(r.k == 2u);
  BOOST_TEST(r.d == 12u);
  BOOST_TEST(r.patch_size == 2);
  BOOST_TEST(r.crop == 4);
  BOOST_TEST(r.normalization.name == "imagenet");
  BOOST_TEST(r.normalization.std[2] == 0.225f);
  BOOST_TEST(r.cluster_sizes == c.cluster_sizes);
  BOOST_TEST(r.inertia == c.inertia);
  BOOST_TEST(r.empty_cluster_events == c.empty_cluster_events);
  BOOST_TEST(r.seed == 7u);
  BOOST_TEST(r.input_fingerprint == "abc");
  BOOST_TEST(!fs::exists(dir / "codebook.h5.partial"));

  // Load errors name the file.
  BOOST_CHECK_THROW(Codebook::load(dir / "missing.h5"), FileError);
  {
    io::H5Object f = io::create_file(dir / "other.h5");
    f.set_attribute("kind", "something_else");
  }
  try {
    Codebook::load(dir / "other.h5");
    BOOST_FAIL("expected a FileError");
  } catch (const FileError& e) {
    BOOST_TEST(std::string(e.what()).find("not a kmim codebook") != std::string::npos);
  }
  Codebook bad = c;
  bad.d = 11;  // not patch² · channels
  bad.centroids.resize(22);
  BOOST_CHECK_THROW(bad.save(dir / "bad.h5", "test", ""), Error);
  BOOST_TEST(!fs::exists(dir / "bad.h5"));
  fs::remove_all(dir);
}
