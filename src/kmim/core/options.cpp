#include "kmim/core/options.hpp"

#include <fstream>
#include <iostream>
#include <sstream>

namespace kmim {

namespace po = boost::program_options;

const char* version() { return KMIM_VERSION; }

OptionSet::OptionSet(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)), description_("Options") {}

OptionSet& OptionSet::add_flag(const std::string& name, bool& target, const std::string& help) {
  description_.add_options()(name.c_str(), po::bool_switch(&target)->default_value(target),
                             help.c_str());
  entries_.push_back({name, [&target] { return detail::option_value_text(target); }, {}});
  return *this;
}

std::string OptionSet::help_text() const {
  std::ostringstream s;
  s << "Usage: " << program_ << " [options]\n" << summary_ << "\n\n" << description_
    << "\nGeneral:\n"
    << "  --config FILE   read options from an INI file (name = value); the command line wins\n"
    << "  --help          print this help and exit\n"
    << "  --version       print the kmim version and exit\n";
  return s.str();
}

bool OptionSet::parse(int argc, const char* const argv[]) { return parse(argc, argv, std::cout); }

bool OptionSet::parse(int argc, const char* const argv[], std::ostream& out) {
  std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  return parse(args, out);
}

bool OptionSet::parse(const std::vector<std::string>& args, std::ostream& out) {
  po::options_description general;
  std::string config_file;
  general.add_options()("help", "")("version", "")("config", po::value<std::string>(&config_file),
                                                    "");
  po::options_description all;
  all.add(description_).add(general);
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(all).run(), vm);
    if (vm.count("help")) {
      out << help_text();
      return false;
    }
    if (vm.count("version")) {
      out << program_ << " (kmim) " << version() << "\n";
      return false;
    }
    if (vm.count("config")) {
      const std::string file = vm["config"].as<std::string>();
      std::ifstream in(file);
      if (!in) throw OptionError("config", file, "cannot open the config file");
      try {
        po::store(po::parse_config_file(in, description_, false), vm);
      } catch (const po::error& e) {
        throw OptionError("config", file, e.what());
      }
    }
    po::notify(vm);
    given_ = vm;
  } catch (const po::error& e) {
    throw UsageError(std::string(e.what()) + " (see --help)");
  }
  return true;
}

bool OptionSet::given(const std::string& name) const {
  return given_.count(name) > 0 && !given_[name].defaulted();
}

std::string OptionSet::value_text(const std::string& name) const {
  for (const auto& e : entries_)
    if (e.name == name) return e.text();
  throw Error(fmt::format("internal: no option named '{}' in {}", name, program_));
}

void OptionSet::require(const std::string& name, bool condition,
                        const std::string& problem) const {
  if (!condition) throw OptionError(name, value_text(name), problem);
}

ConfigEntries OptionSet::effective() const {
  ConfigEntries out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) out.emplace_back(e.name, e.text());
  return out;
}

std::string OptionSet::effective_ini() const {
  std::string s = fmt::format("# {} {} effective configuration\n", program_, version());
  for (const auto& e : entries_) {
    // Lists are written one `name = item` line per item, which is how the parser reads them.
    if (e.items) {
      for (const auto& item : e.items()) s += fmt::format("{} = {}\n", e.name, item);
    } else {
      s += fmt::format("{} = {}\n", e.name, e.text());
    }
  }
  return s;
}

}  // namespace kmim
