// Unit tests of kmim/core: errors, logging, progress, the counter-based RNG and options.
#define BOOST_TEST_MODULE kmim_core
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/options.hpp"
#include "kmim/core/progress.hpp"
#include "kmim/core/rng.hpp"

using namespace kmim;

// ---------------------------------------------------------------------------------- errors
BOOST_AUTO_TEST_CASE(errors_name_their_context) {
  BOOST_TEST(std::string(FileError("/data/a.h5", "is not a codebook").what()) ==
             "file '/data/a.h5': is not a codebook");
  BOOST_TEST(std::string(OptionError("k", "0", "must be at least 1").what()) ==
             "option --k=0: must be at least 1");
  BOOST_TEST(std::string(OptionError("out", "", "is required").what()) == "option --out: is required");
  BOOST_CHECK_THROW(require_option(false, "k", "0", "bad"), OptionError);
  BOOST_CHECK_NO_THROW(require_option(true, "k", "0", "bad"));
  BOOST_CHECK_THROW(require_file(false, "x", "bad"), FileError);
  // OptionError is a UsageError (reported once, without aborting the job).
  try {
    throw OptionError("k", "0", "bad");
  } catch (const UsageError&) {
  } catch (...) {
    BOOST_FAIL("OptionError must derive from UsageError");
  }
}

// ------------------------------------------------------------------------------------- log
BOOST_AUTO_TEST_CASE(logger_is_rank_aware) {
  Logger logger;
  std::ostringstream sink;
  logger.set_sink(&sink);
  logger.set_timestamps(false);
  logger.configure(0, 2, LogLevel::info);
  logger.info("hello {}", 42);
  logger.debug("hidden");
  BOOST_TEST(sink.str() == "info  [0/2] hello 42\n");

  sink.str("");
  logger.configure(1, 2, LogLevel::info);
  logger.info("rank 1 info is silent by default");
  logger.warn("rank 1 warns");
  BOOST_TEST(sink.str() == "warn  [1/2] rank 1 warns\n");

  sink.str("");
  logger.configure(1, 2, LogLevel::debug, /*all_ranks=*/true);
  logger.debug("now visible");
  BOOST_TEST(sink.str() == "debug [1/2] now visible\n");

  logger.set_timestamps(true);
  sink.str("");
  logger.info("x");
  // "YYYY-MM-DD HH:MM:SS " prefix.
  BOOST_TEST(sink.str().size() == std::string("2026-01-01 00:00:00 info  [1/2] x\n").size());
  BOOST_TEST(sink.str()[4] == '-');
  BOOST_CHECK_THROW(parse_log_level("loud"), UsageError);
  BOOST_TEST((parse_log_level("warn") == LogLevel::warn));
}

// -------------------------------------------------------------------------------- progress
BOOST_AUTO_TEST_CASE(progress_rate_and_eta) {
  BOOST_TEST(format_duration(45) == "45s");
  BOOST_TEST(format_duration(140) == "2m20s");
  BOOST_TEST(format_duration(3723) == "1h02m03s");
  BOOST_TEST(format_duration(-1) == "?");
  BOOST_TEST(eta_seconds(0, 100, 5.0) < 0.0);
  BOOST_TEST(eta_seconds(25, 100, 10.0) == 30.0);
  BOOST_TEST(eta_seconds(100, 100, 10.0) == 0.0);
  BOOST_TEST(format_progress("shard train", 250, 1000, "images", 10.0) ==
             "shard train: 250/1000 images (25.0%), 25.0 images/s, ETA 30s");

  Logger logger;
  std::ostringstream sink;
  logger.set_sink(&sink);
  logger.set_timestamps(false);
  Progress p("loop", 10, "steps", /*interval=*/3600.0, logger);
  p.advance(3);
  p.advance(2);
  BOOST_TEST(p.done() == 5u);
  BOOST_TEST(sink.str().empty());  // the interval has not passed
  p.finish();
  BOOST_TEST(sink.str().find("loop: 5/10 steps (50.0%)") != std::string::npos);
  p.finish();  // only once
  const std::string printed = sink.str();
  BOOST_TEST(std::count(printed.begin(), printed.end(), '\n') == 1);
}

// ------------------------------------------------------------------------------------- rng
BOOST_AUTO_TEST_CASE(philox_known_answers) {
  // Random123's published known-answer vectors for Philox4x32-10.
  using A4 = std::array<std::uint32_t, 4>;
  BOOST_TEST((philox4x32_10({0, 0, 0, 0}, {0, 0}) ==
              A4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  BOOST_TEST((philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                            {0xffffffff, 0xffffffff}) ==
              A4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  BOOST_TEST((philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                            {0xa4093822, 0x299f31d0}) ==
              A4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

BOOST_AUTO_TEST_CASE(streams_depend_only_on_seed_stream_and_position) {
  RandomStream a(7, 3);
  std::vector<std::uint32_t> first;
  for (int i = 0; i < 10; ++i) first.push_back(a.next_u32());
  // Random access: seeking reproduces any word, whatever was drawn before.
  RandomStream b(7, 3);
  b.seek(6);
  BOOST_TEST(b.next_u32() == first[6]);
  BOOST_TEST(b.position() == 7u);
  RandomStream c(7, 3, 9);
  BOOST_TEST(c.next_u32() == first[9]);
  // Words come from the Philox block of (position / 4) with counter (block, stream) and key seed.
  const auto block = philox4x32_10({1, 0, 3, 0}, {7, 0});
  BOOST_TEST(first[4] == block[0]);
  BOOST_TEST(first[7] == block[3]);
  // Other seeds and streams differ.
  BOOST_TEST(RandomStream(8, 3).next_u32() != first[0]);
  BOOST_TEST(RandomStream(7, 4).next_u32() != first[0]);
  BOOST_TEST(stream_id({1, 2}) != stream_id({2, 1}));
  BOOST_TEST(stream_id({1, 2}) == stream_id({1, 2}));
}

BOOST_AUTO_TEST_CASE(distributions_have_the_right_moments) {
  RandomStream r(123, stream_id({42}));
  const int n = 200000;
  double su = 0, su2 = 0, sn = 0, sn2 = 0;
  float umin = 1, umax = 0;
  for (int i = 0; i < n; ++i) {
    const float u = r.uniform();
    umin = std::min(umin, u);
    umax = std::max(umax, u);
    su += u;
    su2 += double(u) * u;
    const double z = r.normal();
    sn += z;
    sn2 += z * z;
  }
  BOOST_TEST(umin >= 0.0f);
  BOOST_TEST(umax < 1.0f);
  BOOST_TEST(std::abs(su / n - 0.5) < 0.005);
  BOOST_TEST(std::abs(su2 / n - 1.0 / 3.0) < 0.005);
  BOOST_TEST(std::abs(sn / n) < 0.01);
  BOOST_TEST(std::abs(sn2 / n - 1.0) < 0.02);

  // below(n) is uniform over [0, n): chi-square on 10 bins.
  std::vector<int> bins(10, 0);
  for (int i = 0; i < 100000; ++i) ++bins[r.below(10)];
  double chi2 = 0;
  for (int b : bins) chi2 += (b - 10000.0) * (b - 10000.0) / 10000.0;
  BOOST_TEST(chi2 < 30.0);  // 9 dof: p ≈ 0.0004
  for (int i = 0; i < 1000; ++i) BOOST_TEST(r.below(3) < 3u);
}

BOOST_AUTO_TEST_CASE(permutations_are_permutations_and_reproducible) {
  const auto p = random_permutation(1000, 5, 1);
  std::set<std::uint64_t> seen(p.begin(), p.end());
  BOOST_TEST(seen.size() == 1000u);
  BOOST_TEST(*seen.rbegin() == 999u);
  BOOST_TEST((random_permutation(1000, 5, 1) == p));
  BOOST_TEST((random_permutation(1000, 5, 2) != p));
  int fixed = 0;
  for (std::size_t i = 0; i < p.size(); ++i) fixed += p[i] == i;
  BOOST_TEST(fixed < 10);  // a random permutation has ~1 fixed point
}

// --------------------------------------------------------------------------------- options
namespace {
struct DemoParams {
  int k = 50;
  double tol = 1e-4;
  std::string out = "codebook.h5";
  bool resume = false;
  std::vector<int> sweep = {10, 20};
};

OptionSet bind(DemoParams& p) {
  OptionSet o("kmim_demo", "A demo program.");
  o.add("k", p.k, "centroids").add("tol", p.tol, "tolerance").add("out", p.out, "output");
  o.add_flag("resume", p.resume, "resume").add("sweep", p.sweep, "values of K");
  return o;
}
}  // namespace

BOOST_AUTO_TEST_CASE(options_defaults_command_line_and_config) {
  DemoParams p;
  OptionSet o = bind(p);
  std::ostringstream out;
  BOOST_TEST(o.parse(std::vector<std::string>{"--k", "7", "--resume", "--sweep", "1", "2", "3"}, out));
  BOOST_TEST(p.k == 7);
  BOOST_TEST(p.resume);
  BOOST_TEST(p.tol == 1e-4);
  BOOST_TEST((p.sweep == std::vector<int>{1, 2, 3}));
  BOOST_TEST(o.given("k"));
  BOOST_TEST(!o.given("tol"));
  const auto eff = o.effective();
  BOOST_TEST(eff.size() == 5u);
  BOOST_TEST(eff[0].first == "k");
  BOOST_TEST(eff[0].second == "7");
  BOOST_TEST(eff[3].second == "true");
  BOOST_TEST(eff[4].second == "1,2,3");

  // The effective INI text reads back to the same parameters.
  const std::string ini = o.effective_ini();
  const std::string file = "test_core_options.ini";
  std::ofstream(file) << ini;
  DemoParams q;
  OptionSet o2 = bind(q);
  BOOST_TEST(o2.parse(std::vector<std::string>{"--config", file}, out));
  BOOST_TEST(q.k == 7);
  BOOST_TEST(q.resume);
  BOOST_TEST((q.sweep == std::vector<int>{1, 2, 3}));
  BOOST_TEST(o2.effective_ini() == ini);

  // The command line wins over the config file.
  DemoParams r;
  OptionSet o3 = bind(r);
  BOOST_TEST(o3.parse(std::vector<std::string>{"--config", file, "--k", "9"}, out));
  BOOST_TEST(r.k == 9);
  std::remove(file.c_str());
}

BOOST_AUTO_TEST_CASE(options_help_version_and_errors) {
  DemoParams p;
  OptionSet o = bind(p);
  std::ostringstream out;
  BOOST_TEST(!o.parse(std::vector<std::string>{"--help"}, out));
  BOOST_TEST(out.str().find("--k arg (=50)") != std::string::npos);
  BOOST_TEST(out.str().find("--config FILE") != std::string::npos);
  out.str("");
  BOOST_TEST(!o.parse(std::vector<std::string>{"--version"}, out));
  BOOST_TEST(out.str() == std::string("kmim_demo (kmim) ") + version() + "\n");

  DemoParams q;
  OptionSet o2 = bind(q);
  BOOST_CHECK_THROW(o2.parse(std::vector<std::string>{"--k", "abc"}, out), UsageError);
  BOOST_CHECK_THROW(o2.parse(std::vector<std::string>{"--nonsense"}, out), UsageError);
  BOOST_CHECK_THROW(o2.parse(std::vector<std::string>{"--config", "/no/such.ini"}, out), UsageError);
  try {
    o2.parse(std::vector<std::string>{"--k", "abc"}, out);
  } catch (const UsageError& e) {
    BOOST_TEST(std::string(e.what()).find("--k") != std::string::npos);
  }
  DemoParams r;
  OptionSet o3 = bind(r);
  BOOST_TEST(o3.parse(std::vector<std::string>{"--k", "0"}, out));
  try {
    o3.require("k", r.k >= 1, "must be at least 1");
    BOOST_FAIL("require must throw");
  } catch (const OptionError& e) {
    BOOST_TEST(std::string(e.what()) == "option --k=0: must be at least 1");
  }

  // A required option that is missing.
  std::string needed;
  OptionSet o4("kmim_demo", "x");
  o4.add_required("manifest", needed, "input");
  BOOST_CHECK_THROW(o4.parse(std::vector<std::string>{}, out), UsageError);
}
