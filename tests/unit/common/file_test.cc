// SPDX-License-Identifier: Apache-2.0
#include "common/file.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "common/status.h"

namespace lychee {
namespace {

absl::StatusOr<size_t> MappedSize(const std::string& path) {
  LY_ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(path));
  return file.size();
}

TEST(FileTest, ReadsAndMapsTheSameBytes) {
  const std::string path = testing::TempDir() + "/lychee_file_test.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out << "hello\0world";
  }
  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok()) << text.status();
  auto size = MappedSize(path);
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, text->size());
  std::remove(path.c_str());
}

TEST(FileTest, MissingFileIsNotFoundNamingThePath) {
  auto text = ReadFile("/nonexistent/lychee.txt");
  EXPECT_EQ(text.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(text.status().message().find("/nonexistent/lychee.txt"), std::string::npos);
  EXPECT_EQ(MappedSize("/nonexistent/x").status().code(), absl::StatusCode::kNotFound);
}

TEST(FileTest, JoinPathUsesOneSlash) {
  EXPECT_EQ(JoinPath("a", "b"), "a/b");
  EXPECT_EQ(JoinPath("a/", "b"), "a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
}

}  // namespace
}  // namespace lychee
