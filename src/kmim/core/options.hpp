// Command-line and config-file options bound to a program's Params struct.
//
// Each program keeps its parameters in one struct whose member initialisers are the documented
// defaults, and binds every member to an option:
//
//   KmeansParams p;
//   OptionSet opts("kmim_kmeans", "Builds a K-means codebook over image patches.");
//   opts.add("k", p.k, "number of centroids").add("iters", p.iters, "Lloyd iterations");
//   if (!opts.parse(argc, argv)) return 0;            // --help / --version printed
//   opts.require("k", p.k >= 1, "must be at least 1");
//
// Every OptionSet understands --help, --version and --config FILE (INI: `name = value` lines,
// '#' comments; the command line wins over the file). effective() lists every option's value
// after parsing; effective_ini() is that list as INI text, which --config reads back, and which
// programs store as the `config` attribute of every output file.
#pragma once

#include <functional>
#include <iosfwd>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "kmim/core/error.hpp"

namespace kmim {

using ConfigEntries = std::vector<std::pair<std::string, std::string>>;

/// The kmim version string ("0.1.0").
const char* version();

namespace detail {
template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};

template <class T>
std::string option_value_text(const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (is_vector<T>::value) {
    return fmt::format("{}", fmt::join(value, ","));
  } else {
    return fmt::format("{}", value);
  }
}
}  // namespace detail

class OptionSet {
 public:
  OptionSet(std::string program, std::string summary);

  /// An optional option; the target's current value is the default shown in --help.
  template <class T>
  OptionSet& add(const std::string& name, T& target, const std::string& help) {
    return add_impl(name, target, help, false);
  }
  /// An option that must be given (on the command line or in the config file).
  template <class T>
  OptionSet& add_required(const std::string& name, T& target, const std::string& help) {
    return add_impl(name, target, help, true);
  }
  /// A flag: present → true. In a config file: `name = true`.
  OptionSet& add_flag(const std::string& name, bool& target, const std::string& help);

  /// Parses the command line (and --config). Returns false when --help or --version was
  /// printed to `out` and the program should exit 0. Throws UsageError on bad options.
  bool parse(int argc, const char* const argv[]);
  bool parse(int argc, const char* const argv[], std::ostream& out);
  bool parse(const std::vector<std::string>& args, std::ostream& out);

  /// Throws OptionError(name, <current value>, problem) unless condition holds.
  void require(const std::string& name, bool condition, const std::string& problem) const;
  /// True when the option was given explicitly (command line or config file).
  bool given(const std::string& name) const;

  ConfigEntries effective() const;
  std::string effective_ini() const;
  std::string help_text() const;
  const std::string& program() const { return program_; }
  std::string value_text(const std::string& name) const;

 private:
  template <class T>
  OptionSet& add_impl(const std::string& name, T& target, const std::string& help,
                      bool required) {
    namespace po = boost::program_options;
    auto* sem = po::value<T>(&target);
    if (required) {
      sem->required();
    } else {
      sem->default_value(target, detail::option_value_text(target));
    }
    if constexpr (detail::is_vector<T>::value) sem->multitoken()->composing();
    description_.add_options()(name.c_str(), sem, help.c_str());
    Entry entry{name, [&target] { return detail::option_value_text(target); }, {}};
    if constexpr (detail::is_vector<T>::value) {
      entry.items = [&target] {
        std::vector<std::string> items;
        for (const auto& v : target) items.push_back(detail::option_value_text(v));
        return items;
      };
    }
    entries_.push_back(std::move(entry));
    return *this;
  }

  struct Entry {
    std::string name;
    std::function<std::string()> text;
    std::function<std::vector<std::string>()> items;  // set for list options only
  };

  std::string program_;
  std::string summary_;
  boost::program_options::options_description description_;
  std::vector<Entry> entries_;
  boost::program_options::variables_map given_;
};

}  // namespace kmim
