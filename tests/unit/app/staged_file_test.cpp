#include "app/staged_file.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace mooring::app {
namespace {

namespace fs = std::filesystem;

class StagedFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mooring-staged-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::string read(const fs::path& path) {
    std::ifstream in(path);
    std::stringstream content;
    content << in.rdbuf();
    return content.str();
  }
  static mode_t mode(const fs::path& path) {
    struct stat st {};
    ::stat(path.c_str(), &st);
    return st.st_mode & 07777;
  }

  fs::path dir_;
};

TEST_F(StagedFileTest, NothingChangesUntilCommitAndThenAllAtOnce) {
  const auto path = dir_ / "mooring.toml";
  ASSERT_EQ(write_file_atomically(path, "old\n", 0640), "");
  EXPECT_EQ(mode(path), 0640u);
  {
    auto staged = StagedFile::stage(path, "new\n");
    ASSERT_TRUE(staged) << staged.error();
    EXPECT_EQ(read(path), "old\n");
    EXPECT_EQ(staged->commit(), "");
  }
  EXPECT_EQ(read(path), "new\n");
  EXPECT_EQ(mode(path), 0640u) << "a replaced file keeps its permissions";
  EXPECT_FALSE(fs::exists(dir_ / "mooring.toml.tmp"));
}

TEST_F(StagedFileTest, DroppedWithoutCommitLeavesTheFileAndNoTemporary) {
  const auto path = dir_ / "mooring.toml";
  ASSERT_EQ(write_file_atomically(path, "old\n"), "");
  {
    auto staged = StagedFile::stage(path, "never\n");
    ASSERT_TRUE(staged) << staged.error();
    EXPECT_TRUE(fs::exists(dir_ / "mooring.toml.tmp"));
  }
  EXPECT_EQ(read(path), "old\n");
  EXPECT_FALSE(fs::exists(dir_ / "mooring.toml.tmp"));
}

TEST_F(StagedFileTest, ANewFileIsPrivateByDefault) {
  const auto path = dir_ / "secret.toml";
  auto staged = StagedFile::stage(path, "token = \"x\"\n");
  ASSERT_TRUE(staged) << staged.error();
  EXPECT_EQ(staged->commit(), "");
  EXPECT_EQ(mode(path), 0600u);
}

TEST_F(StagedFileTest, AnUnwritableDirectoryIsAnErrorThatNamesThePath) {
  auto staged = StagedFile::stage((dir_ / "missing" / "mooring.toml").string(), "x");
  ASSERT_FALSE(staged);
  EXPECT_NE(staged.error().find("missing/mooring.toml.tmp"), std::string::npos) << staged.error();
  EXPECT_NE(staged.error().find("No such file or directory"), std::string::npos) << staged.error();
}

TEST_F(StagedFileTest, ReplacingKeepsThePreviousContentBesideIt) {
  const auto path = (dir_ / "mooring.toml").string();
  ASSERT_EQ(write_file_atomically(path, "first\n", 0640), "");
  EXPECT_EQ(replace_keeping_previous(path, "second\n"), "");
  EXPECT_EQ(read(path), "second\n");
  EXPECT_EQ(read(path + ".previous"), "first\n");
  EXPECT_EQ(mode(path + ".previous"), 0640u) << "the kept copy is as private as the file";
  EXPECT_EQ(replace_keeping_previous(path, "third\n"), "");
  EXPECT_EQ(read(path + ".previous"), "second\n");

  // A file that did not exist: written, nothing kept.
  const auto fresh = (dir_ / "fresh.toml").string();
  EXPECT_EQ(replace_keeping_previous(fresh, "new\n"), "");
  EXPECT_EQ(read(fresh), "new\n");
  EXPECT_FALSE(fs::exists(fresh + ".previous"));
}

TEST_F(StagedFileTest, ASymbolicLinkStaysOneAndItsTargetIsReplaced) {
  const auto target = dir_ / "real.toml";
  const auto link = dir_ / "mooring.toml";
  ASSERT_EQ(write_file_atomically(target, "old\n"), "");
  fs::create_symlink(target, link);
  EXPECT_EQ(replace_keeping_previous(link.string(), "new\n"), "");
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(read(target), "new\n");
  EXPECT_EQ(read(dir_ / "real.toml.previous"), "old\n");
}

TEST_F(StagedFileTest, AFileThatCannotBeReplacedIsLeftAsItWas) {
  const auto path = dir_ / "mooring.toml";
  ASSERT_EQ(write_file_atomically(path, "kept\n"), "");
  // Something in the way of the temporary file that unlink cannot remove.
  fs::create_directory(dir_ / "mooring.toml.tmp");
  const auto error = replace_keeping_previous(path.string(), "lost\n");
  EXPECT_NE(error.find("mooring.toml.tmp"), std::string::npos) << error;
  EXPECT_EQ(read(path), "kept\n");
}


// With the file immutable, the replacement fails: the version kept beside it
// must still be the one before, not the file that stayed in place.
TEST_F(StagedFileTest, AFailedReplacementKeepsThePreviousVersionAsItWas) {
  const auto path = dir_ / "mooring.toml";
  ASSERT_EQ(write_file_atomically(path, "first\n"), "");
  ASSERT_EQ(replace_keeping_previous(path.string(), "second\n"), "");
  ASSERT_EQ(read(path.string() + ".previous"), "first\n");
  const std::string lock = "chattr +i " + path.string() + " 2>/dev/null";
  if (std::system(lock.c_str()) != 0) GTEST_SKIP() << "chattr +i is not available here";
  const auto error = replace_keeping_previous(path.string(), "third\n");
  std::system(("chattr -i " + path.string()).c_str());
  EXPECT_NE(error, "");
  EXPECT_EQ(read(path), "second\n");
  EXPECT_EQ(read(path.string() + ".previous"), "first\n");
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
  EXPECT_FALSE(fs::exists(path.string() + ".previous.tmp"));
}

}  // namespace
}  // namespace mooring::app
