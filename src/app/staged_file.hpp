// Files replaced atomically: readers see the old content or the new, never a
// part, and a crash at any instant leaves one of the two on disk.
#pragma once

#include <boost/system/result.hpp>

#include <string>
#include <string_view>
#include <sys/types.h>

namespace mooring::app {

// The new content of a file, written to "<path>.tmp" and fsynced, not yet in
// place. commit() renames it over <path> and fsyncs the directory; a
// StagedFile dropped without commit() removes its temporary file.
class StagedFile {
 public:
  // `mode` is used when the file does not exist yet; an existing file keeps its own.
  static boost::system::result<StagedFile, std::string> stage(std::string path,
                                                               std::string_view content,
                                                               mode_t mode = 0600);
  StagedFile(StagedFile&& other) noexcept;
  StagedFile& operator=(StagedFile&&) = delete;
  StagedFile(const StagedFile&) = delete;
  ~StagedFile();

  // Empty on success, else what went wrong (the old file is then unchanged).
  std::string commit();
  const std::string& path() const { return path_; }

 private:
  StagedFile(std::string path, std::string temp) : path_(std::move(path)), temp_(std::move(temp)) {}
  std::string path_;
  std::string temp_;  // empty once committed or moved from
};

// Replaces the file at `path` with `content` as StagedFile does, keeping what
// it held before as "<path>.previous" (replaced the same way). A symbolic link
// stays one: the file it points to is replaced. Empty on success, else the
// error; `path` then still holds its old content.
std::string replace_keeping_previous(const std::string& path, std::string_view content);

// stage() then commit(); empty or the error.
std::string write_file_atomically(const std::string& path, std::string_view content,
                                  mode_t mode = 0644);

}  // namespace mooring::app
