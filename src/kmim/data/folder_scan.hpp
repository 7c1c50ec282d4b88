// Finding the images of an ImageNet-style folder tree and their labels.
//
// Layout: <root>/train/<wnid>/*.JPEG; <root>/val/ either in class folders like train, or flat
// with a label file (LOC_val_solution.csv: "ImageId,PredictionString" rows whose
// PredictionString starts with the wnid; or a plain "filename wnid" list). Labels are
// 0..C-1 in sorted wnid order of the selected classes, as torchvision's ImageFolder assigns
// them, so train and val always agree.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace kmim::data {

/// The selected classes: ids (wnids, sorted; index = label) and optional readable names.
struct ClassTable {
  std::vector<std::string> ids;
  std::vector<std::string> names;  // empty, or one per id ("" when the name file lacks one)

  /// The label of `id`, or -1 when it is not selected.
  std::int32_t label_of(const std::string& id) const;
};

/// One candidate image: its path relative to the root ("train/n01440764/x.JPEG") and label.
struct ImageEntry {
  std::string path;
  std::int32_t label = 0;
};

/// True for names ending in .jpeg, .jpg or .png (any case).
bool has_image_extension(const std::filesystem::path& file);

/// Reads a class list: one wnid per line; blank lines and '#' comments are ignored; the first
/// whitespace-separated word of a line is the id. Throws FileError on duplicates or no ids.
std::vector<std::string> read_class_list(const std::filesystem::path& file);

/// Reads a LOC_synset_mapping.txt-style file ("n01440764 tench, Tinca tinca"): id → name.
std::map<std::string, std::string> read_class_names(const std::filesystem::path& file);

/// Reads a flat-val label file: LOC_val_solution.csv (header "ImageId,PredictionString") or a
/// plain "filename wnid" list. Keys are file names without extension ("ILSVRC2012_val_00000001").
std::map<std::string, std::string> read_val_labels(const std::filesystem::path& file);

/// The class folders (sorted names of the sub-folders) of `dir`; empty when it has none.
std::vector<std::string> list_class_folders(const std::filesystem::path& dir);

/// Builds the class table: the ids in `classes_file` if given (each must be a class folder of
/// `<root>/train` when that folder exists), else every class folder of `<root>/train`, else of
/// `<root>/val`. Names come from `names_file` if given. Throws FileError/UsageError naming the
/// file or the unknown class.
ClassTable make_class_table(const std::filesystem::path& root, const std::filesystem::path& classes_file,
                            const std::filesystem::path& names_file);

/// What a split scan found.
struct SplitScan {
  std::vector<ImageEntry> images;  ///< sorted by (label, path): torchvision ImageFolder order
  std::string layout;              ///< "class folders" or "flat + label file '<file>'"
  /// Flat layout: image files (relative paths) that the label file does not name.
  std::vector<std::string> unlabelled;
};

/// Lists the candidate images of `<root>/<split>` for the selected classes. Class-folder layout
/// if the split folder has sub-folders; otherwise flat files labelled by `val_labels` (if
/// empty: `<root>/LOC_val_solution.csv` or `<root>/<split>/LOC_val_solution.csv` when present).
/// Every selected class must have at least one image; throws FileError naming the folder or
/// class otherwise. Other file types (not .jpeg/.jpg/.png) are ignored.
SplitScan scan_split(const std::filesystem::path& root, const std::string& split,
                     const ClassTable& classes, const std::filesystem::path& val_labels);

}  // namespace kmim::data
