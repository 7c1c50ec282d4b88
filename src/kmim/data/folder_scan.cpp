#include "kmim/data/folder_scan.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"

namespace kmim::data {
namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::ifstream open_text(const fs::path& file, const char* what) {
  std::error_code ec;
  if (!fs::exists(file, ec)) throw FileError(file, fmt::format("{} does not exist", what));
  if (fs::is_directory(file, ec)) throw FileError(file, fmt::format("{} is a folder, not a file", what));
  std::ifstream in(file);
  if (!in) throw FileError(file, fmt::format("cannot open the {}", what));
  return in;
}

/// Sorted names of the regular files (following symlinks) directly in `dir`.
std::vector<std::string> list_files(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_regular_file(ec2) || it->is_symlink(ec2)) {
      if (it->is_directory(ec2)) continue;
      std::string name = it->path().filename().string();
      // Tabs and line breaks cannot be stored in the line-based file lists and reports.
      if (name.find_first_of("\t\n\r") != std::string::npos) {
        log().warn("{}: ignored (tab or line break in the file name)", (dir / name).string());
        continue;
      }
      names.push_back(std::move(name));
    }
  }
  if (ec) throw FileError(dir, "cannot list the folder: " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

std::int32_t ClassTable::label_of(const std::string& id) const {
  const auto it = std::lower_bound(ids.begin(), ids.end(), id);
  if (it == ids.end() || *it != id) return -1;
  return static_cast<std::int32_t>(it - ids.begin());
}

bool has_image_extension(const fs::path& file) {
  const std::string ext = lower(file.extension().string());
  return ext == ".jpeg" || ext == ".jpg" || ext == ".png";
}

std::vector<std::string> read_class_list(const fs::path& file) {
  std::ifstream in = open_text(file, "class list");
  std::vector<std::string> ids;
  std::set<std::string> seen;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string id;
    if (!(words >> id)) continue;
    if (!seen.insert(id).second)
      throw FileError(file, fmt::format("line {}: class '{}' is listed twice", line_no, id));
    ids.push_back(id);
  }
  if (ids.empty()) throw FileError(file, "the class list names no class");
  return ids;
}

std::map<std::string, std::string> read_class_names(const fs::path& file) {
  std::ifstream in = open_text(file, "class-name file");
  std::map<std::string, std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    const auto sep = line.find_first_of(" \t");
    const std::string id = line.substr(0, sep);
    names[id] = sep == std::string::npos ? std::string() : trim(line.substr(sep));
  }
  if (names.empty()) throw FileError(file, "the class-name file names no class");
  return names;
}

std::map<std::string, std::string> read_val_labels(const fs::path& file) {
  std::ifstream in = open_text(file, "label file");
  std::map<std::string, std::string> labels;
  std::string line;
  int line_no = 0;
  bool csv = false;
  while (std::getline(in, line)) {
    ++line_no;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    if (line_no == 1 && line.rfind("ImageId", 0) == 0) {  // LOC_val_solution.csv header
      csv = true;
      continue;
    }
    std::string name, wnid;
    if (csv || line.find(',') != std::string::npos) {
      // ImageId,PredictionString: "ILSVRC2012_val_00008726,n02119789 255 142 454 329 ..."
      const auto comma = line.find(',');
      name = trim(line.substr(0, comma));
      std::istringstream rest(comma == std::string::npos ? std::string() : line.substr(comma + 1));
      rest >> wnid;
    } else {
      std::istringstream words(line);
      words >> name >> wnid;
    }
    if (name.empty() || wnid.empty())
      throw FileError(file, fmt::format("line {}: expected 'ImageId,PredictionString' or "
                                        "'filename wnid', got '{}'",
                                        line_no, line));
    const std::string key = fs::path(name).stem().string();
    const auto [it, inserted] = labels.emplace(key, wnid);
    if (!inserted && it->second != wnid)
      throw FileError(file, fmt::format("line {}: image '{}' is labelled twice ({} and {})",
                                        line_no, name, it->second, wnid));
  }
  if (labels.empty()) throw FileError(file, "the label file labels no image");
  return labels;
}

std::vector<std::string> list_class_folders(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_directory(ec2)) names.push_back(it->path().filename().string());
  }
  if (ec) throw FileError(dir, "cannot list the folder: " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

ClassTable make_class_table(const fs::path& root, const fs::path& classes_file,
                            const fs::path& names_file) {
  std::error_code ec;
  if (!fs::exists(root, ec)) throw FileError(root, "the data root does not exist");
  if (!fs::is_directory(root, ec)) throw FileError(root, "the data root is not a folder");
  const fs::path train = root / "train";
  const bool have_train = fs::is_directory(train, ec);
  ClassTable table;
  if (!classes_file.empty()) {
    table.ids = read_class_list(classes_file);
    if (have_train) {
      for (const auto& id : table.ids)
        if (!fs::is_directory(train / id, ec))
          throw FileError(classes_file, fmt::format("class '{}' is unknown: '{}' is not a folder",
                                                    id, (train / id).string()));
    }
  } else if (have_train) {
    table.ids = list_class_folders(train);
    if (table.ids.empty()) throw FileError(train, "has no class folders");
  } else if (fs::is_directory(root / "val", ec) && !list_class_folders(root / "val").empty()) {
    table.ids = list_class_folders(root / "val");
  } else {
    throw FileError(root, "cannot tell the classes: no 'train' class folders (give --classes)");
  }
  std::sort(table.ids.begin(), table.ids.end());
  if (!names_file.empty()) {
    const auto names = read_class_names(names_file);
    for (const auto& id : table.ids) {
      const auto it = names.find(id);
      table.names.push_back(it == names.end() ? std::string() : it->second);
    }
  }
  return table;
}

SplitScan scan_split(const fs::path& root, const std::string& split, const ClassTable& classes,
                     const fs::path& val_labels) {
  const fs::path dir = root / split;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw FileError(dir, fmt::format("split folder '{}' does not exist", split));
  SplitScan scan;
  std::vector<std::uint64_t> per_class(classes.ids.size(), 0);
  const std::vector<std::string> folders = list_class_folders(dir);
  if (!folders.empty()) {
    scan.layout = "class folders";
    for (std::size_t c = 0; c < classes.ids.size(); ++c) {
      const fs::path class_dir = dir / classes.ids[c];
      if (!fs::is_directory(class_dir, ec))
        throw FileError(class_dir, fmt::format("class '{}' has no folder in split '{}'",
                                               classes.ids[c], split));
      for (const auto& name : list_files(class_dir)) {
        if (!has_image_extension(name)) continue;
        scan.images.push_back({split + "/" + classes.ids[c] + "/" + name,
                               static_cast<std::int32_t>(c)});
        ++per_class[c];
      }
    }
  } else {
    fs::path label_file = val_labels;
    if (label_file.empty()) {
      for (const fs::path& guess : {root / "LOC_val_solution.csv", dir / "LOC_val_solution.csv"})
        if (fs::is_regular_file(guess, ec)) {
          label_file = guess;
          break;
        }
    }
    if (label_file.empty())
      throw FileError(dir, fmt::format("split '{}' has no class folders and no label file "
                                       "(give --val-labels)",
                                       split));
    const auto labels = read_val_labels(label_file);
    scan.layout = fmt::format("flat + label file '{}'", label_file.string());
    for (const auto& name : list_files(dir)) {
      if (!has_image_extension(name)) continue;
      const auto it = labels.find(fs::path(name).stem().string());
      if (it == labels.end()) {
        scan.unlabelled.push_back(split + "/" + name);
        continue;
      }
      const std::int32_t label = classes.label_of(it->second);
      if (label < 0) continue;  // a class outside the selection
      scan.images.push_back({split + "/" + name, label});
      ++per_class[static_cast<std::size_t>(label)];
    }
  }
  for (std::size_t c = 0; c < classes.ids.size(); ++c)
    if (per_class[c] == 0)
      throw FileError(dir, fmt::format("class '{}' has no images (.jpeg/.jpg/.png) in split '{}'",
                                       classes.ids[c], split));
  std::sort(scan.images.begin(), scan.images.end(), [](const ImageEntry& a, const ImageEntry& b) {
    return a.label != b.label ? a.label < b.label : a.path < b.path;
  });
  return scan;
}

}  // namespace kmim::data
