// The linear probe on features: lr schedule, LARS and BatchNorm against hand computations, one
// training step against a double-precision reference, separable data, bit-identical resume,
// feature-file checks.
#define BOOST_TEST_MODULE eval_linear_probe
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numbers>
#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/eval/feature_file.hpp"
#include "kmim/eval/linear_probe.hpp"
#include "kmim/io/hdf5.hpp"

namespace fs = std::filesystem;
using namespace kmim;
using namespace kmim::eval;

namespace {

struct MpiFixture {
  dist::MpiSession session;
};

struct TempDir {
  fs::path path;
  TempDir() : path(fs::temp_directory_path() / ("kmim_test_linprobe_" + std::to_string(::getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

bool throws_with(const std::function<void()>& f, const std::string& text) {
  try {
    f();
  } catch (const Error& e) {
    if (std::string(e.what()).find(text) != std::string::npos) return true;
    BOOST_TEST_MESSAGE("unexpected message: " << e.what());
    return false;
  }
  return false;
}

/// Gaussian clusters around well separated class centres, with an offset and scale per
/// dimension (so that BatchNorm has work to do).
FeatureSet clusters(std::size_t n, std::size_t d, std::size_t classes, double noise,
                    std::uint64_t stream) {
  RandomStream centres(17, 1000);
  std::vector<double> c(classes * d);
  for (auto& v : c) v = 3.0 * centres.normal();
  RandomStream rng(17, stream);
  FeatureSet s;
  s.file = fmt::format("memory{}", stream);
  s.n = n;
  s.dim = d;
  for (std::size_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::size_t>(rng.below(classes));
    s.labels.push_back(static_cast<std::int32_t>(label));
    for (std::size_t t = 0; t < d; ++t)
      s.features.push_back(static_cast<float>(
          10.0 + 0.5 * double(t) + (1.0 + double(t % 3)) * (c[label * d + t] + noise * rng.normal())));
  }
  return s;
}

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

BOOST_AUTO_TEST_CASE(learning_rate_schedule_is_mae_lr_sched) {
  LinearProbeConfig c;  // 90 epochs, 10 warmup, batch 1024, base 0.1 → peak 0.4
  BOOST_TEST(c.peak_lr() == 0.4, boost::test_tools::tolerance(1e-15));
  BOOST_TEST(probe_learning_rate(c, 0.0) == 0.0);
  BOOST_TEST(probe_learning_rate(c, 5.0) == 0.2, boost::test_tools::tolerance(1e-15));
  BOOST_TEST(probe_learning_rate(c, 10.0) == 0.4, boost::test_tools::tolerance(1e-15));
  BOOST_TEST(probe_learning_rate(c, 50.0) == 0.2, boost::test_tools::tolerance(1e-12));  // cosine midpoint
  BOOST_TEST(probe_learning_rate(c, 90.0) == 0.0, boost::test_tools::tolerance(1e-12));
  c.min_lr = 0.01;
  BOOST_TEST(probe_learning_rate(c, 50.0) == 0.205, boost::test_tools::tolerance(1e-12));
  // 30 epochs into the cosine: min + (peak − min)·½(1 + cos(π·20/80)).
  BOOST_TEST(probe_learning_rate(c, 30.0) ==
                 0.01 + 0.39 * 0.5 * (1.0 + std::cos(std::numbers::pi * 0.25)),
             boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(lars_matches_hand_computation) {
  LinearProbeConfig c;  // momentum 0.9, trust 0.001, wd 0
  // Matrix parameter: p = (3, 4), ‖p‖ = 5; g = (0.6, 0.8), ‖g‖ = 1 → q = 0.001·5/1 = 0.005,
  // step = (0.003, 0.004), μ = step, p ← p − 2·μ = (2.994, 3.992).
  std::vector<float> p = {3.0f, 4.0f}, mu = {0.0f, 0.0f};
  const std::vector<float> g = {0.6f, 0.8f};
  lars_update(p, g, mu, 2.0, c, true);
  BOOST_TEST(p[0] == 2.994f, boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(p[1] == 3.992f, boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(mu[0] == 0.003f, boost::test_tools::tolerance(1e-6f));
  // Second step: ‖p‖ = ‖(2.994, 3.992)‖ = 4.99, q = 0.00499, μ = 0.9·0.003 + 0.6·0.00499.
  lars_update(p, g, mu, 2.0, c, true);
  const double mu0 = 0.9 * 0.003 + 0.6 * 0.001 * std::hypot(2.994, 3.992);
  BOOST_TEST(mu[0] == mu0, boost::test_tools::tolerance(1e-5));
  BOOST_TEST(p[0] == 2.994 - 2.0 * mu0, boost::test_tools::tolerance(1e-5));
  // Bias (1-D): no adaptation, no weight decay: μ = g, p ← p − lr·g.
  c.weight_decay = 0.5;
  std::vector<float> b = {1.0f}, mb = {0.0f};
  const std::vector<float> gb = {0.25f};
  lars_update(b, gb, mb, 2.0, c, false);
  BOOST_TEST(b[0] == 0.5f);
  // Weight decay enters before the trust ratio: g = 0, wd 0.5 → dp = 0.5·p = (1.5, 2),
  // ‖dp‖ = 2.5, q = 0.001·5/2.5 = 0.002, step = (0.003, 0.004).
  std::vector<float> w = {3.0f, 4.0f}, mw = {0.0f, 0.0f};
  const std::vector<float> zero = {0.0f, 0.0f};
  lars_update(w, zero, mw, 1.0, c, true);
  BOOST_TEST(mw[0] == 0.003f, boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(mw[1] == 0.004f, boost::test_tools::tolerance(1e-6f));
  // A zero parameter: q = 1 (plain momentum SGD).
  c.weight_decay = 0.0;
  std::vector<float> z = {0.0f, 0.0f}, mz = {0.0f, 0.0f};
  lars_update(z, g, mz, 1.0, c, true);
  BOOST_TEST(z[0] == -0.6f);
}

BOOST_AUTO_TEST_CASE(one_step_matches_double_reference_and_batchnorm_stats) {
  // One epoch of one full batch: x [4, 2], 3 classes.
  FeatureSet s;
  s.file = "memory";
  s.n = 4;
  s.dim = 2;
  s.features = {1, 10, 2, 20, 3, 10, 6, 40};
  s.labels = {0, 1, 2, 1};
  LinearProbeConfig c;
  c.epochs = 1;
  c.warmup_epochs = 0;
  c.batch_size = 4;
  c.base_lr = 64.0;  // lr = 1.0 at iteration 0 (cosine starts at the peak)
  dist::Communicator self(MPI_COMM_SELF);
  LinearProbeState st = init_linear_probe(2, 3, c);
  const std::vector<float> w0 = st.weight;
  train_probe_epoch(st, s, c, self);
  // BatchNorm running stats: column 0 = (1, 2, 3, 6): mean 3, biased var 3.5, unbiased 14/3.
  BOOST_TEST(st.running_mean[0] == 0.3f, boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(st.running_var[0] == float(0.9 + 0.1 * 14.0 / 3.0), boost::test_tools::tolerance(1e-6f));
  // Column 1 = (10, 20, 10, 40): mean 20, biased var 150, unbiased 200.
  BOOST_TEST(st.running_mean[1] == 2.0f, boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(st.running_var[1] == float(0.9 + 20.0), boost::test_tools::tolerance(1e-6f));

  // Reference step in double: y = BN(x), softmax CE gradient, LARS with zero momentum history.
  const double mean[2] = {3.0, 20.0}, var[2] = {3.5, 150.0};
  std::vector<double> dw(6, 0.0), db(3, 0.0);
  for (std::size_t r = 0; r < 4; ++r) {
    double y[2], z[3], zmax = -1e300, sum = 0.0;
    for (int j = 0; j < 2; ++j) y[j] = (s.features[r * 2 + j] - mean[j]) / std::sqrt(var[j] + 1e-6);
    for (int k = 0; k < 3; ++k) {
      z[k] = w0[k * 2] * y[0] + w0[k * 2 + 1] * y[1];
      zmax = std::max(zmax, z[k]);
    }
    for (int k = 0; k < 3; ++k) sum += std::exp(z[k] - zmax);
    for (int k = 0; k < 3; ++k) {
      const double g = (std::exp(z[k] - zmax) / sum - (k == s.labels[r] ? 1.0 : 0.0)) / 4.0;
      for (int j = 0; j < 2; ++j) dw[k * 2 + j] += g * y[j];
      db[k] += g;
    }
  }
  double pn = 0, gn = 0;
  for (int i = 0; i < 6; ++i) {
    pn += double(w0[i]) * w0[i];
    gn += dw[i] * dw[i];
  }
  const double q = 0.001 * std::sqrt(pn) / std::sqrt(gn);
  for (int i = 0; i < 6; ++i)
    BOOST_TEST(st.weight[i] == w0[i] - 1.0 * q * dw[i], boost::test_tools::tolerance(1e-5));
  for (int k = 0; k < 3; ++k) BOOST_TEST(st.bias[k] == -db[k], boost::test_tools::tolerance(1e-5));
  // Initialisation: W ~ N(0, 0.01²), b = 0.
  for (float v : w0) BOOST_TEST(std::abs(v) < 0.06f);
}

BOOST_AUTO_TEST_CASE(separable_features_reach_full_accuracy) {
  const FeatureSet train = clusters(2000, 24, 10, 0.3, 1);
  const FeatureSet val = clusters(500, 24, 10, 0.3, 2);
  LinearProbeConfig c;
  c.epochs = 20;
  c.warmup_epochs = 2;
  c.batch_size = 128;
  // lr 4: LARS moves W by about lr × 0.001 of its norm per step, and 2000 samples give only 15
  // steps per epoch (MAE's ImageNet recipe runs lr 6.4 for 7000 steps).
  c.base_lr = 8.0;
  dist::Communicator self(MPI_COMM_SELF);
  check_probe_inputs(train, val, c, self);
  LinearProbeState st = init_linear_probe(24, 10, c);
  BOOST_TEST(evaluate_probe(st, val, self).top1 < 50.0);  // untrained
  BOOST_TEST(train_linear_probe(st, train, val, c, self));
  const ProbeSummary sum = summarize_probe(st.history);
  BOOST_TEST(sum.last_top1 >= 99.0, sum.line());
  BOOST_TEST(sum.last_top5 == 100.0);
  BOOST_TEST(st.history.size() == 20u);
  BOOST_TEST(st.history.back().train_loss < st.history.front().train_loss);
  for (double a : st.history.back().class_accuracy) BOOST_TEST(a >= 95.0);
}

BOOST_AUTO_TEST_CASE(resume_is_bit_identical) {
  TempDir tmp;
  const FeatureSet train = clusters(600, 8, 4, 1.0, 3);
  const FeatureSet val = clusters(100, 8, 4, 1.0, 4);
  LinearProbeConfig c;
  c.epochs = 6;
  c.warmup_epochs = 2;
  c.batch_size = 64;
  dist::Communicator self(MPI_COMM_SELF);
  LinearProbeState straight = init_linear_probe(8, 4, c);
  train_linear_probe(straight, train, val, c, self);

  const fs::path ckpt = tmp.path / "ckpt.h5";
  LinearProbeState first = init_linear_probe(8, 4, c);
  const bool done = train_linear_probe(first, train, val, c, self,
                                       [&](const LinearProbeState& s) { save_probe_checkpoint(ckpt, s, "key-a", self); },
                                       3);
  BOOST_TEST(!done);
  BOOST_TEST(first.epochs_done == 3);
  LinearProbeState resumed = load_probe_checkpoint(ckpt, "key-a");
  BOOST_TEST(resumed.epochs_done == 3);
  BOOST_TEST(resumed.history.size() == 3u);
  BOOST_TEST(train_linear_probe(resumed, train, val, c, self));
  BOOST_TEST(resumed.weight == straight.weight, boost::test_tools::per_element());
  BOOST_TEST(resumed.bias == straight.bias, boost::test_tools::per_element());
  BOOST_TEST(resumed.running_var == straight.running_var, boost::test_tools::per_element());
  BOOST_TEST(resumed.history.back().top1 == straight.history.back().top1);
  BOOST_TEST(throws_with([&] { load_probe_checkpoint(ckpt, "key-b"); },
                         "checkpoint has 'key-a', this run has 'key-b'"));
}

BOOST_AUTO_TEST_CASE(feature_files_are_checked) {
  TempDir tmp;
  const std::vector<float> f = {1, 2, 3, 4, 5, 6};
  const std::vector<std::int32_t> l = {0, 1, 1};
  write_feature_file(tmp.path / "ok.h5", f, 3, 2, l, 2, "test", "");
  const FeatureSet ok = read_feature_file(tmp.path / "ok.h5");
  BOOST_TEST(ok.n == 3u);
  BOOST_TEST(ok.dim == 2u);
  BOOST_TEST(ok.num_classes == 2);
  BOOST_TEST(ok.features == f, boost::test_tools::per_element());
  BOOST_TEST(ok.fingerprint.size() == 16u);

  auto make = [&](const std::string& name, auto&& fill) {
    const fs::path p = tmp.path / name;
    {
      const io::H5Object root = io::create_file(p);
      fill(root);
    }
    return p;
  };
  const auto mismatch = make("mismatch.h5", [&](const io::H5Object& r) {
    r.write_dataset<float>("features", f, {3, 2});
    r.write_dataset<std::int32_t>("labels", std::vector<std::int32_t>{0, 1}, {2});
  });
  BOOST_TEST(throws_with([&] { read_feature_file(mismatch); }, "has 3 rows but /labels has 2 labels"));
  const auto missing = make("missing.h5", [&](const io::H5Object& r) {
    r.write_dataset<float>("features", f, {3, 2});
  });
  BOOST_TEST(throws_with([&] { read_feature_file(missing); }, "has no dataset '/labels'"));
  const auto wrong_type = make("type.h5", [&](const io::H5Object& r) {
    r.write_dataset<std::int32_t>("features", std::vector<std::int32_t>(6, 1), {3, 2});
    r.write_dataset<std::int32_t>("labels", l, {3});
  });
  BOOST_TEST(throws_with([&] { read_feature_file(wrong_type); }, "2-D float32"));
  const auto nan = make("nan.h5", [&](const io::H5Object& r) {
    std::vector<float> g = f;
    g[3] = std::nanf("");
    r.write_dataset<float>("features", g, {3, 2});
    r.write_dataset<std::int32_t>("labels", l, {3});
  });
  BOOST_TEST(throws_with([&] { read_feature_file(nan); }, "/features[1, 1] is not finite"));
  const auto bad_label = make("label.h5", [&](const io::H5Object& r) {
    r.write_dataset<float>("features", f, {3, 2});
    r.write_dataset<std::int32_t>("labels", std::vector<std::int32_t>{0, -1, 1}, {3});
  });
  BOOST_TEST(throws_with([&] { read_feature_file(bad_label); }, "/labels[1] = -1"));
  BOOST_TEST(throws_with([&] { read_feature_file(tmp.path / "absent.h5"); }, "does not exist"));

  // Train and val must fit together; the batch must fit the training set.
  write_feature_file(tmp.path / "d3.h5", std::vector<float>(9, 1.0f), 3, 3, l, 2, "test", "");
  const FeatureSet d3 = read_feature_file(tmp.path / "d3.h5");
  LinearProbeConfig c;
  c.batch_size = 2;
  dist::Communicator self(MPI_COMM_SELF);
  BOOST_TEST(throws_with([&] { check_probe_inputs(ok, d3, c, self); }, "have dimension 2"));
  c.batch_size = 4;
  BOOST_TEST(throws_with([&] { check_probe_inputs(ok, ok, c, self); },
                         "option --batch-size=4: is larger than the 3 training samples"));
  write_feature_file(tmp.path / "c5.h5", f, 3, 2, l, 5, "test", "");
  BOOST_TEST(throws_with([&] { feature_num_classes(ok, read_feature_file(tmp.path / "c5.h5")); },
                         "declares num_classes = 5"));
}
