#include "files/copy.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "testing/scratch_dir.h"

namespace meshsync::files {
namespace {

class CopyTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  // A file of `size` random bytes; returns its content.
  std::string MakeFile(const std::string& name, uint64_t size) {
    std::string data(size, '\0');
    std::mt19937_64 random(size);
    for (char& c : data) c = static_cast<char>(random());
    int fd = open(Path(name).c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
    close(fd);
    return data;
  }

  std::string Read(const std::string& name) {
    std::string data;
    int fd = open(Path(name).c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    char buffer[1 << 16];
    ssize_t n;
    while ((n = read(fd, buffer, sizeof buffer)) > 0) data.append(buffer, static_cast<size_t>(n));
    close(fd);
    return data;
  }

  // Copies the first `size` bytes of `from` into a new file `to`.
  Result<CopyMethod> Copy(const std::string& from, const std::string& to, uint64_t size,
                          CopyMode mode = CopyMode::kAuto) {
    int in = open(Path(from).c_str(), O_RDONLY | O_CLOEXEC);
    int out = open(Path(to).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_GE(in, 0);
    EXPECT_GE(out, 0);
    Result<CopyMethod> result = CopyFileData(in, out, size, mode);
    close(in);
    close(out);
    return result;
  }

  // Whether this file system takes an aligned direct write.
  bool DirectWritesWork() {
    int probe = open(Path("probe").c_str(), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
    if (probe < 0) return false;
    void* block = std::aligned_alloc(4096, 4096);
    std::memset(block, 7, 4096);
    bool direct = pwrite(probe, block, 4096, 0) == 4096;
    std::free(block);
    close(probe);
    return direct;
  }

  static std::string RandomBytes(std::mt19937_64& random, size_t size) {
    std::string data(size, '\0');
    for (char& c : data) c = static_cast<char>(random());
    return data;
  }

  std::string Path(const std::string& name) const { return (dir_.path() / name).string(); }

  meshsync::testing::ScratchDir dir_{"copy"};
};

TEST_F(CopyTest, CopiesEveryByteAtEverySize) {
  // Around the direct-I/O alignment, the threshold for direct I/O and its
  // block size, with a tail that fills no whole block.
  const uint64_t sizes[] = {0,
                            1,
                            4095,
                            4096,
                            4097,
                            (1u << 20) + 3,
                            kDirectCopyMinBytes - 1,
                            kDirectCopyMinBytes,
                            kDirectCopyMinBytes + (5u << 20) + 12345};
  for (CopyMode mode : {CopyMode::kAuto, CopyMode::kPageCache, CopyMode::kDirect}) {
    for (uint64_t size : sizes) {
      SCOPED_TRACE(::testing::Message() << "mode " << static_cast<int>(mode) << " size " << size);
      std::string from = "from-" + std::to_string(size);
      std::string to = "to-" + std::to_string(static_cast<int>(mode)) + "-" + std::to_string(size);
      std::string data = MakeFile(from, size);
      ASSERT_TRUE(Copy(from, to, size, mode).ok());
      EXPECT_TRUE(Read(to) == data);
    }
  }
}

TEST_F(CopyTest, CopiesOnlyThePrefixAskedFor) {
  // The file grew after it was scanned: the copy is of what was scanned.
  for (CopyMode mode : {CopyMode::kPageCache, CopyMode::kDirect}) {
    for (uint64_t size : {uint64_t{5000}, kDirectCopyMinBytes + (3u << 20) + 4097}) {
      SCOPED_TRACE(size);
      std::string data = MakeFile("grown", size + 70000);
      std::string to = "prefix-" + std::to_string(static_cast<int>(mode)) + std::to_string(size);
      ASSERT_TRUE(Copy("grown", to, size, mode).ok());
      EXPECT_TRUE(Read(to) == data.substr(0, size));
    }
  }
}

TEST_F(CopyTest, ASourceShorterThanAskedIsUnavailable) {
  for (uint64_t size : {uint64_t{5000}, kDirectCopyMinBytes + (3u << 20) + 4097}) {
    SCOPED_TRACE(size);
    MakeFile("short", size - 100);
    std::string to = "short-copy-" + std::to_string(size);
    Result<CopyMethod> result = Copy("short", to, size, CopyMode::kDirect);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), StatusCode::kUnavailable);
    EXPECT_NE(result.status().message().find("shrank"), std::string::npos)
        << result.status().message();
  }
}

// Where this file system takes direct writes, a large copy that finds the
// page cache slow goes on with them.
TEST_F(CopyTest, ALargeCopyGoesAroundThePageCacheWhereTheFileSystemAllows) {
  if (!DirectWritesWork()) GTEST_SKIP() << "no direct I/O on " << dir_.path();

  std::string data = MakeFile("large", kDirectCopyMinBytes + 12345);
  Result<CopyMethod> result = Copy("large", "large-copy", data.size(), CopyMode::kDirect);
  ASSERT_TRUE(result.ok()) << result.status().message();
  EXPECT_EQ(*result, CopyMethod::kDirect);
  EXPECT_TRUE(Read("large-copy") == data);
  // A small file is not worth it.
  MakeFile("small", 10000);
  result = Copy("small", "small-copy", 10000, CopyMode::kDirect);
  ASSERT_TRUE(result.ok());
  EXPECT_NE(*result, CopyMethod::kDirect);
}

// Chunks of every size, appended after a prefix the file keeps (an
// interrupted transfer's), over leftovers it must not keep: direct or not,
// the file ends up as the prefix and what was appended, exactly.
TEST_F(CopyTest, ASequentialWriterKeepsThePrefixAndEndsAtTheLastByte) {
  std::mt19937_64 random(5);
  for (CopyMode mode : {CopyMode::kPageCache, CopyMode::kDirect, CopyMode::kAuto}) {
    const bool direct = mode == CopyMode::kDirect;
    for (uint64_t start : {uint64_t{0}, uint64_t{5000}, uint64_t{8192}}) {
      SCOPED_TRACE(::testing::Message() << "mode " << static_cast<int>(mode) << " start " << start);
      std::string name =
          "seq-" + std::to_string(static_cast<int>(mode)) + "-" + std::to_string(start);
      std::string old = MakeFile(name, start + 30000);  // the prefix, then leftovers
      std::string expected = old.substr(0, start);
      int fd = open(Path(name).c_str(), O_RDWR | O_CLOEXEC);
      ASSERT_GE(fd, 0);
      {
        // The size announced is a hint: more arrives than the 1 MiB said.
        SequentialWriter writer(fd, start, 1u << 20, mode);
        while (expected.size() < start + (5u << 20) + 777) {
          std::string piece = RandomBytes(random, random() % (300 << 10));
          ASSERT_TRUE(writer.Append(piece.data(), piece.size()).ok());
          expected += piece;
        }
        if (direct && DirectWritesWork()) {
          EXPECT_TRUE(writer.direct());
        }
        ASSERT_TRUE(writer.Finish().ok());
      }
      EXPECT_EQ(fcntl(fd, F_GETFL) & O_DIRECT, 0);  // the descriptor is as it was
      close(fd);
      EXPECT_TRUE(Read(name) == expected);
    }
  }
}

// Copies from a file (AppendCopy) between appended pieces land where they
// belong, in every mode, also once the writer has gone around the page cache.
TEST_F(CopyTest, ASequentialWriterInterleavesCopiesFromAFile) {
  std::mt19937_64 random(9);
  const std::string source = MakeFile("source", 6u << 20);
  for (CopyMode mode : {CopyMode::kPageCache, CopyMode::kDirect, CopyMode::kAuto}) {
    SCOPED_TRACE(::testing::Message() << "mode " << static_cast<int>(mode));
    std::string name = "mixed-" + std::to_string(static_cast<int>(mode));
    MakeFile(name, 1000);
    int in = open(Path("source").c_str(), O_RDONLY | O_CLOEXEC);
    int fd = open(Path(name).c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(in, 0);
    ASSERT_GE(fd, 0);
    std::string expected;
    {
      SequentialWriter writer(fd, 0, 8u << 20, mode);
      for (int step = 0; step < 24; ++step) {
        if (step % 2 == 0) {
          std::string piece = RandomBytes(random, random() % (700 << 10));
          ASSERT_TRUE(writer.Append(piece.data(), piece.size()).ok());
          expected += piece;
        } else {
          uint64_t offset = random() % source.size();
          uint64_t length = std::min<uint64_t>(random() % (900 << 10), source.size() - offset);
          ASSERT_TRUE(writer.AppendCopy(in, offset, length).ok());
          expected += source.substr(offset, length);
        }
      }
      // A copy past the end of the source is refused.
      EXPECT_FALSE(writer.AppendCopy(in, source.size() - 10, 20).ok());
      EXPECT_FALSE(writer.Finish().ok());
    }
    EXPECT_EQ(fcntl(fd, F_GETFL) & O_DIRECT, 0);
    close(in);
    close(fd);
    std::string got = Read(name);
    ASSERT_GE(got.size(), expected.size());
    EXPECT_TRUE(got.substr(0, expected.size()) == expected);
  }
}

// A writer that appends nothing still cuts the leftovers off.
TEST_F(CopyTest, ASequentialWriterWithNothingToWriteEndsTheFileAtItsStart) {
  MakeFile("nothing", 9000);
  int fd = open(Path("nothing").c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  {
    SequentialWriter writer(fd, 4321, 0, CopyMode::kDirect);
    ASSERT_TRUE(writer.Finish().ok());
  }
  close(fd);
  EXPECT_EQ(Read("nothing").size(), 4321u);
}

}  // namespace
}  // namespace meshsync::files
