#include "kmim/kmeans/train.hpp"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <numeric>
#include <optional>
#include <unordered_map>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/progress.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/kmeans/accumulate.hpp"
#include "kmim/kmeans/assign.hpp"
#include "kmim/kmeans/distance.hpp"
#include "kmim/kmeans/permutation.hpp"

namespace kmim::kmeans {
namespace {

// Purpose tags of the random streams (stream_id({tag, ...})): one per kind of draw, so that
// changing one use of randomness never shifts another.
constexpr std::uint64_t kInitSampleKey = 1;   // which vectors form the initialisation sample
constexpr std::uint64_t kSeedingKey = 2;      // k-means++ draws
constexpr std::uint64_t kRandomInitKey = 3;   // random initial centroids
constexpr std::uint64_t kPassOrderKey = 4;    // mini-batch item order of a pass
constexpr std::uint64_t kReassignKey = 5;     // mini-batch reassignment draws of a step

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<float> to_float(std::span<const double> v) {
  std::vector<float> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), [](double x) { return static_cast<float>(x); });
  return out;
}

/// Rank 0's centroids on every rank, so that ranks can never drift apart, even by one bit.
void broadcast_centroids(const dist::Communicator& comm, std::vector<double>& centroids) {
  comm.bcast(std::span<double>(centroids), 0);
}

double relative_change(const std::vector<double>& inertia) {
  if (inertia.size() < 2) return 0.0;
  const double prev = inertia[inertia.size() - 2];
  const double cur = inertia.back();
  if (prev == 0.0) return cur == 0.0 ? 0.0 : INFINITY;
  return std::abs(prev - cur) / prev;
}

void check_k(const TrainConfig& config, std::uint64_t total) {
  require_option(config.k >= 1, "k", std::to_string(config.k), "must be at least 1");
  require_option(config.k <= total, "k", std::to_string(config.k),
                 fmt::format("is larger than the number of input vectors ({})", total));
  require_option(config.k <= static_cast<std::size_t>(INT32_MAX), "k", std::to_string(config.k),
                 "is too large");
}

void check_gather_size(std::uint64_t rows, std::size_t d) {
  if (rows * d > static_cast<std::uint64_t>(INT_MAX))
    throw UsageError(fmt::format("the initialisation sample ({} vectors of {} values) is too large "
                                 "to gather; lower --init-sample",
                                 rows, d));
}

}  // namespace

Algorithm parse_algorithm(std::string_view text) {
  if (text == "lloyd") return Algorithm::lloyd;
  if (text == "minibatch") return Algorithm::minibatch;
  throw OptionError("algorithm", text, "must be 'lloyd' or 'minibatch'");
}

InitMethod parse_init_method(std::string_view text) {
  if (text == "kmeans++") return InitMethod::kmeans_plus_plus;
  if (text == "random") return InitMethod::random;
  throw OptionError("init", text, "must be 'kmeans++' or 'random'");
}

std::string_view to_string(Algorithm a) { return a == Algorithm::lloyd ? "lloyd" : "minibatch"; }
std::string_view to_string(InitMethod m) {
  return m == InitMethod::kmeans_plus_plus ? "kmeans++" : "random";
}

int planned_iterations(const TrainConfig& config) {
  return config.algorithm == Algorithm::lloyd ? config.iters : config.passes;
}

// ---- initialisation ------------------------------------------------------------------------

std::vector<float> kmeans_plus_plus(const float* x, std::size_t n, std::size_t d, std::size_t k,
                                    std::uint64_t seed) {
  if (k == 0 || n == 0) return {};
  if (k > n) throw Error("kmeans_plus_plus: more centroids than sample vectors");
  RandomStream rng(seed, stream_id({kSeedingKey}));
  const std::size_t trials = 2 + static_cast<std::size_t>(std::log(static_cast<double>(k)));
  std::vector<float> centroids(k * d);

  const auto first = static_cast<std::size_t>(rng.below(n));
  std::copy_n(x + first * d, d, centroids.data());
  std::vector<float> closest(n);
  squared_distances(x, n, d, x + first * d, 1, closest.data());
  double potential = 0;
  for (const float v : closest) potential += v;

  std::vector<double> cumulative(n);
  std::vector<float> candidates(trials * d);
  std::vector<std::size_t> candidate_ids(trials);
  std::vector<float> distances(n * trials);
  for (std::size_t c = 1; c < k; ++c) {
    // Candidates drawn with probability proportional to the current squared distance.
    double running = 0;
    for (std::size_t i = 0; i < n; ++i) cumulative[i] = running += closest[i];
    for (std::size_t t = 0; t < trials; ++t) {
      const double r = rng.uniform_double() * potential;
      // First index whose cumulative sum reaches r (numpy searchsorted, side='left').
      auto it = std::lower_bound(cumulative.begin(), cumulative.end(), r);
      candidate_ids[t] = std::min<std::size_t>(static_cast<std::size_t>(it - cumulative.begin()), n - 1);
      std::copy_n(x + candidate_ids[t] * d, d, candidates.data() + t * d);
    }
    squared_distances(x, n, d, candidates.data(), trials, distances.data());
    // Keep the candidate that lowers the potential most (the first on ties).
    std::size_t best = 0;
    double best_potential = INFINITY;
    for (std::size_t t = 0; t < trials; ++t) {
      double p = 0;
      for (std::size_t i = 0; i < n; ++i) p += std::min(closest[i], distances[i * trials + t]);
      if (p < best_potential) {
        best_potential = p;
        best = t;
      }
    }
    for (std::size_t i = 0; i < n; ++i) closest[i] = std::min(closest[i], distances[i * trials + best]);
    potential = best_potential;
    std::copy_n(candidates.data() + best * d, d, centroids.data() + c * d);
  }
  return centroids;
}

TrainState initial_state(LocalVectors& data, const TrainConfig& config, const dist::Communicator& comm) {
  VectorSource& source = data.source();
  const std::uint64_t total = source.vectors();
  const std::size_t d = data.dim();
  const std::size_t k = config.k;
  check_k(config, total);
  if (!config.initial_centroids.empty()) {
    if (config.initial_centroids.size() != k * d)
      throw UsageError(fmt::format("the initial centroids hold {} values, expected k·d = {}·{}",
                                   config.initial_centroids.size(), k, d));
    TrainState state;
    state.centroids.assign(config.initial_centroids.begin(), config.initial_centroids.end());
    if (config.algorithm == Algorithm::minibatch) state.counts.assign(k, 0);
    log().info("kmeans: starting from the {} given centroids", k);
    return state;
  }

  std::vector<std::uint64_t> sample;
  const std::uint64_t items = source.items();
  const std::uint64_t per_item = source.vectors_per_item();
  const std::uint64_t first_batch = std::min(config.batch_items, items) * per_item;
  if (config.algorithm == Algorithm::minibatch && config.init_sample == 0 && first_batch >= k) {
    // The vectors of the first batch of pass 0, in batch order (the reference K-MIM code seeds
    // k-means++ on its first mini-batch).
    IndexPermutation order(items, config.seed, stream_id({kPassOrderKey, 0}));
    const std::uint64_t batch_items = std::min(config.batch_items, items);
    sample.reserve(batch_items * per_item);
    for (std::uint64_t p = 0; p < batch_items; ++p)
      for (std::uint64_t v = 0; v < per_item; ++v) sample.push_back(order(p) * per_item + v);
  } else {
    std::uint64_t size = config.init_sample;
    if (size == 0) size = std::max<std::uint64_t>(65536, 64 * k);
    size = std::min(size, total);
    require_option(size >= k, "init-sample", std::to_string(config.init_sample),
                   fmt::format("must be at least k ({})", k));
    IndexPermutation order(total, config.seed, stream_id({kInitSampleKey}));
    sample.resize(size);
    for (std::uint64_t i = 0; i < size; ++i) sample[i] = order(i);
    std::sort(sample.begin(), sample.end());
  }
  check_gather_size(sample.size(), d);
  log().info("kmeans: initialising {} centroids with {} on a sample of {} vectors", k,
             to_string(config.init), sample.size());
  const std::vector<float> x = gather_vectors(data, comm, sample);

  // Rank 0 seeds; everyone receives its result (identical centroids by construction).
  std::vector<float> centroids(k * d);
  if (comm.is_root()) {
    if (config.init == InitMethod::kmeans_plus_plus) {
      centroids = kmeans_plus_plus(x.data(), sample.size(), d, k, config.seed);
    } else {
      IndexPermutation pick(sample.size(), config.seed, stream_id({kRandomInitKey}));
      for (std::size_t j = 0; j < k; ++j) std::copy_n(x.data() + pick(j) * d, d, centroids.data() + j * d);
    }
  }
  comm.bcast(std::span<float>(centroids), 0);

  TrainState state;
  state.centroids.assign(centroids.begin(), centroids.end());
  if (config.algorithm == Algorithm::minibatch) state.counts.assign(k, 0);
  return state;
}

// ---- Lloyd -----------------------------------------------------------------------------------

namespace {

struct Candidate {
  float dist2;
  std::uint64_t index;  // global vector index
  std::int32_t label;
};

bool farther(const Candidate& a, const Candidate& b) {
  return a.dist2 > b.dist2 || (a.dist2 == b.dist2 && a.index < b.index);
}

/// Empty-cluster policy (as scikit-learn's Lloyd): each empty cluster takes over the point
/// farthest from its centroid, that point leaving its old cluster (sum and count corrected).
/// Points are taken in order of distance (descending, ties: lower global index), skipping any
/// whose cluster would become empty; only the 2m farthest points over all ranks are considered
/// (m = number of empty clusters), so the choice is the same for every rank count. An empty
/// cluster left without a point keeps its previous centroid. Returns m.
std::int64_t relocate_empty_clusters(LocalVectors& data, const dist::Communicator& comm,
                                     const std::vector<std::int32_t>& labels,
                                     const std::vector<float>& dist2, std::size_t k,
                                     std::vector<double>& sums, std::vector<std::int64_t>& counts) {
  const std::size_t d = data.dim();
  std::vector<std::size_t> empty;
  for (std::size_t j = 0; j < k; ++j)
    if (counts[j] == 0) empty.push_back(j);
  if (empty.empty()) return 0;
  const std::size_t want = 2 * empty.size();

  // This rank's `want` farthest points.
  std::vector<Candidate> local;
  const std::uint64_t first = data.first_vector();
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const Candidate c{dist2[i], first + i, labels[i]};
    if (local.size() < want) {
      local.push_back(c);
      std::push_heap(local.begin(), local.end(), farther);  // top = the nearest kept
    } else if (farther(c, local.front())) {
      std::pop_heap(local.begin(), local.end(), farther);
      local.back() = c;
      std::push_heap(local.begin(), local.end(), farther);
    }
  }
  std::vector<float> local_dist;
  std::vector<std::uint64_t> local_index;
  std::vector<std::int32_t> local_label;
  for (const auto& c : local) {
    local_dist.push_back(c.dist2);
    local_index.push_back(c.index);
    local_label.push_back(c.label);
  }
  const auto all_dist = comm.allgatherv<float>(local_dist);
  const auto all_index = comm.allgatherv<std::uint64_t>(local_index);
  const auto all_label = comm.allgatherv<std::int32_t>(local_label);
  std::vector<Candidate> all;
  for (std::size_t i = 0; i < all_dist.size(); ++i) all.push_back({all_dist[i], all_index[i], all_label[i]});
  std::sort(all.begin(), all.end(), farther);
  if (all.size() > want) all.resize(want);

  std::vector<std::uint64_t> chosen;
  std::vector<std::size_t> targets, sources;
  for (const auto& c : all) {
    if (targets.size() == empty.size()) break;
    const auto old = static_cast<std::size_t>(c.label);
    if (counts[old] <= 1) continue;
    --counts[old];
    counts[empty[targets.size()]] = 1;
    chosen.push_back(c.index);
    sources.push_back(old);
    targets.push_back(empty[targets.size()]);
  }
  const std::vector<float> x = gather_vectors(data, comm, chosen);
  for (std::size_t i = 0; i < chosen.size(); ++i) {
    for (std::size_t t = 0; t < d; ++t) {
      const double v = x[i * d + t];
      sums[sources[i] * d + t] -= v;
      sums[targets[i] * d + t] = v;
    }
  }
  if (chosen.size() < empty.size())
    log().warn("kmeans: {} empty clusters could not be refilled and keep their centroids",
               empty.size() - chosen.size());
  return static_cast<std::int64_t>(empty.size());
}

}  // namespace

IterationReport lloyd_iteration(LocalVectors& data, const TrainConfig& config,
                                const dist::Communicator& comm, TrainState& state) {
  const auto t0 = Clock::now();
  const std::size_t k = config.k;
  const std::size_t d = data.dim();
  const std::vector<float> centroids = to_float(state.centroids);
  std::vector<float> c_norms2(k);
  squared_norms(centroids.data(), k, d, c_norms2.data());

  const std::uint64_t n_local = data.count();
  std::vector<std::int32_t> labels(n_local);
  std::vector<float> dist2(n_local);
  std::vector<double> sums(k * d + 1, 0.0);  // last slot: inertia
  std::vector<std::int64_t> counts(k, 0);
  // Streaming passes can take minutes: report progress (rank 0's share) every 30 s.
  std::optional<Progress> progress;
  if (!data.cached())
    progress.emplace(fmt::format("kmeans: iteration {}", state.completed + 1), n_local, "vectors", 30.0);
  data.for_each_chunk([&](const float* x, std::size_t n, std::uint64_t first) {
    assign_nearest_centroid(x, n, d, centroids.data(), k, labels.data() + first, dist2.data() + first,
                            c_norms2.data());
    accumulate_cluster_sums(x, n, d, labels.data() + first, k, sums.data(), counts.data());
    if (progress) progress->update(first + n);
  });
  double local_inertia = 0;
  for (const float v : dist2) local_inertia += v;
  sums[k * d] = local_inertia;
  comm.allreduce(std::span<double>(sums));
  comm.allreduce(std::span<std::int64_t>(counts));
  const double inertia = sums[k * d];

  const std::int64_t events = relocate_empty_clusters(data, comm, labels, dist2, k, sums, counts);
  for (std::size_t j = 0; j < k; ++j) {
    if (counts[j] == 0) continue;  // could not be refilled: keeps its centroid
    const double inv = 1.0 / static_cast<double>(counts[j]);
    for (std::size_t t = 0; t < d; ++t) state.centroids[j * d + t] = sums[j * d + t] * inv;
  }
  broadcast_centroids(comm, state.centroids);

  state.inertia.push_back(inertia);
  state.empty_events.push_back(events);
  ++state.completed;
  IterationReport report;
  report.iteration = state.completed;
  report.inertia = inertia;
  report.relative_change = relative_change(state.inertia);
  report.events = events;
  report.vectors = data.source().vectors();
  report.seconds = seconds_since(t0);
  report.gflops = 2.0 * static_cast<double>(report.vectors) * static_cast<double>(k) *
                  static_cast<double>(d) / std::max(report.seconds, 1e-12) / 1e9;
  if (config.tol > 0 && state.inertia.size() >= 2 && report.relative_change < config.tol)
    state.converged = true;
  return report;
}

// ---- mini-batch --------------------------------------------------------------------------------

MinibatchStepResult minibatch_step(const float* x, std::size_t n_local, std::size_t d,
                                   std::span<const std::uint64_t> positions,
                                   std::uint64_t batch_vectors, std::uint64_t step,
                                   const TrainConfig& config, const dist::Communicator& comm,
                                   TrainState& state) {
  const std::size_t k = config.k;
  // scikit-learn's _random_reassign: reassign when a centre has never been hit, or every
  // 10·k vectors.
  state.since_reassign += static_cast<std::int64_t>(batch_vectors);
  bool random_reassign = false;
  if (std::any_of(state.counts.begin(), state.counts.end(), [](std::int64_t c) { return c == 0; }) ||
      state.since_reassign >= static_cast<std::int64_t>(10 * k)) {
    state.since_reassign = 0;
    random_reassign = true;
  }

  const std::vector<float> centroids = to_float(state.centroids);
  std::vector<float> c_norms2(k);
  squared_norms(centroids.data(), k, d, c_norms2.data());
  std::vector<std::int32_t> labels(n_local);
  std::vector<float> dist2(n_local);
  assign_nearest_centroid(x, n_local, d, centroids.data(), k, labels.data(), dist2.data(), c_norms2.data());
  std::vector<double> sums(k * d + 1, 0.0);
  std::vector<std::int64_t> batch_counts(k, 0);
  accumulate_cluster_sums(x, n_local, d, labels.data(), k, sums.data(), batch_counts.data());
  double local_inertia = 0;
  for (const float v : dist2) local_inertia += v;
  sums[k * d] = local_inertia;
  comm.allreduce(std::span<double>(sums));
  comm.allreduce(std::span<std::int64_t>(batch_counts));

  MinibatchStepResult result;
  result.inertia = sums[k * d];
  // Per-centre learning rate b_j / n_j with counts accumulated over all batches, computed as
  // scikit-learn does: c <- (c * n_old + sum_batch) / (n_old + b).
  for (std::size_t j = 0; j < k; ++j) {
    if (batch_counts[j] == 0) continue;
    const auto old_count = static_cast<double>(state.counts[j]);
    state.counts[j] += batch_counts[j];
    const double alpha = 1.0 / static_cast<double>(state.counts[j]);
    for (std::size_t t = 0; t < d; ++t) {
      double& c = state.centroids[j * d + t];
      c = (c * old_count + sums[j * d + t]) * alpha;
    }
  }

  if (random_reassign && config.reassignment_ratio > 0) {
    const std::int64_t max_count = *std::max_element(state.counts.begin(), state.counts.end());
    const double threshold = config.reassignment_ratio * static_cast<double>(max_count);
    std::vector<char> to_reassign(k, 0);
    std::size_t n_reassign = 0;
    for (std::size_t j = 0; j < k; ++j)
      if (static_cast<double>(state.counts[j]) < threshold) {
        to_reassign[j] = 1;
        ++n_reassign;
      }
    // At most half a batch of centres (the lowest counts; ties: lower index).
    const auto limit = static_cast<std::size_t>(0.5 * static_cast<double>(batch_vectors));
    if (n_reassign > limit) {
      std::vector<std::size_t> by_count(k);
      std::iota(by_count.begin(), by_count.end(), 0);
      std::stable_sort(by_count.begin(), by_count.end(),
                       [&](std::size_t a, std::size_t b) { return state.counts[a] < state.counts[b]; });
      for (std::size_t r = limit; r < k; ++r) to_reassign[by_count[r]] = 0;
      n_reassign = std::min(n_reassign, limit);
    }
    if (n_reassign > 0) {
      // Distinct batch positions, uniformly (seeded by the global step number).
      IndexPermutation pick(batch_vectors, config.seed, stream_id({kReassignKey, step}));
      std::vector<std::uint64_t> wanted(n_reassign);
      for (std::size_t r = 0; r < n_reassign; ++r) wanted[r] = pick(r);
      std::unordered_map<std::uint64_t, std::size_t> row_of;
      for (std::size_t i = 0; i < n_local; ++i) row_of.emplace(positions[i], i);
      std::vector<std::uint64_t> slots;
      std::vector<float> mine;
      for (std::size_t r = 0; r < n_reassign; ++r) {
        auto it = row_of.find(wanted[r]);
        if (it == row_of.end()) continue;
        slots.push_back(r);
        mine.insert(mine.end(), x + it->second * d, x + (it->second + 1) * d);
      }
      const auto all_slots = comm.allgatherv<std::uint64_t>(slots);
      const auto all_vectors = comm.allgatherv<float>(mine);
      if (all_slots.size() != n_reassign) throw Error("minibatch_step: a batch vector has no owner");
      std::vector<float> chosen(n_reassign * d);
      for (std::size_t r = 0; r < all_slots.size(); ++r)
        std::copy_n(all_vectors.data() + r * d, d, chosen.data() + all_slots[r] * d);
      std::size_t r = 0;
      for (std::size_t j = 0; j < k; ++j) {
        if (!to_reassign[j]) continue;
        std::copy_n(chosen.data() + r * d, d, state.centroids.data() + j * d);
        ++r;
      }
    }
    // Reassigned centres restart from the smallest remaining count (scikit-learn's choice: not
    // so small that they are reassigned again at once).
    std::int64_t min_kept = -1;
    for (std::size_t j = 0; j < k; ++j)
      if (!to_reassign[j] && (min_kept < 0 || state.counts[j] < min_kept)) min_kept = state.counts[j];
    if (min_kept >= 0)
      for (std::size_t j = 0; j < k; ++j)
        if (to_reassign[j]) state.counts[j] = min_kept;
    result.reassigned = static_cast<std::int64_t>(n_reassign);
  }
  broadcast_centroids(comm, state.centroids);
  return result;
}

IterationReport minibatch_pass(LocalVectors& data, const TrainConfig& config,
                               const dist::Communicator& comm, TrainState& state) {
  const auto t0 = Clock::now();
  VectorSource& source = data.source();
  const std::uint64_t items = source.items();
  const std::uint64_t per_item = source.vectors_per_item();
  const std::uint64_t batch = std::min(config.batch_items, items);
  const std::uint64_t batches = (items + batch - 1) / batch;
  const auto pass = static_cast<std::uint64_t>(state.completed);
  IndexPermutation order(items, config.seed, stream_id({kPassOrderKey, pass}));

  double pass_inertia = 0;
  std::int64_t events = 0;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> owned;  // (item, position in batch)
  std::vector<std::uint64_t> owned_items, positions;
  std::vector<float> x;
  Progress progress(fmt::format("kmeans: pass {}", pass + 1), batches, "batches", 30.0);
  for (std::uint64_t b = 0; b < batches; ++b) {
    const std::uint64_t begin = b * batch;
    const std::uint64_t end = std::min(items, begin + batch);
    owned.clear();
    for (std::uint64_t p = begin; p < end; ++p) {
      const std::uint64_t item = order(p);
      if (data.owns_item(item)) owned.emplace_back(item, p - begin);
    }
    std::sort(owned.begin(), owned.end());
    owned_items.clear();
    positions.clear();
    for (const auto& [item, pos] : owned) {
      owned_items.push_back(item);
      for (std::uint64_t v = 0; v < per_item; ++v) positions.push_back(pos * per_item + v);
    }
    data.read_items(owned_items, x);
    const MinibatchStepResult r =
        minibatch_step(x.data(), positions.size(), data.dim(), positions, (end - begin) * per_item,
                       pass * batches + b, config, comm, state);
    pass_inertia += r.inertia;
    events += r.reassigned;
    progress.update(b + 1);  // the pass's summary line comes from the caller
  }

  state.inertia.push_back(pass_inertia);
  state.empty_events.push_back(events);
  ++state.completed;
  IterationReport report;
  report.iteration = state.completed;
  report.inertia = pass_inertia;
  report.relative_change = relative_change(state.inertia);
  report.events = events;
  report.vectors = source.vectors();
  report.seconds = seconds_since(t0);
  report.gflops = 2.0 * static_cast<double>(report.vectors) * static_cast<double>(config.k) *
                  static_cast<double>(data.dim()) / std::max(report.seconds, 1e-12) / 1e9;
  if (config.tol > 0 && state.inertia.size() >= 2 && report.relative_change < config.tol)
    state.converged = true;
  return report;
}

// ---- driver ------------------------------------------------------------------------------------

FinalAssignment final_assignment(LocalVectors& data, std::span<const double> centroids_fp64,
                                 std::size_t k, const dist::Communicator& comm) {
  const std::size_t d = data.dim();
  const std::vector<float> centroids = to_float(centroids_fp64);
  std::vector<float> c_norms2(k);
  squared_norms(centroids.data(), k, d, c_norms2.data());
  FinalAssignment out;
  out.cluster_sizes.assign(k, 0);
  std::vector<std::int32_t> labels;
  std::vector<float> dist2;
  double inertia = 0;
  data.for_each_chunk([&](const float* x, std::size_t n, std::uint64_t) {
    labels.resize(n);
    dist2.resize(n);
    assign_nearest_centroid(x, n, d, centroids.data(), k, labels.data(), dist2.data(), c_norms2.data());
    for (std::size_t i = 0; i < n; ++i) {
      ++out.cluster_sizes[static_cast<std::size_t>(labels[i])];
      inertia += dist2[i];
    }
  });
  comm.allreduce(std::span<std::int64_t>(out.cluster_sizes));
  out.inertia = comm.allreduce(inertia);
  return out;
}

void train_kmeans(LocalVectors& data, const TrainConfig& config, const dist::Communicator& comm,
                  TrainState& state, const AfterIteration& after_each) {
  check_k(config, data.source().vectors());
  const int planned = planned_iterations(config);
  while (!state.converged && state.completed < planned) {
    const IterationReport report = config.algorithm == Algorithm::lloyd
                                       ? lloyd_iteration(data, config, comm, state)
                                       : minibatch_pass(data, config, comm, state);
    if (after_each && !after_each(state, report)) return;
  }
}

}  // namespace kmim::kmeans
