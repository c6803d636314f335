// A byte buffer with a read and a write index.
//
// Memory is allocated lazily and can be *borrowed*: a connection whose input
// is empty reads straight into its loop's scratch area and lends that region
// to the buffer for the duration of one callback (no copy, no allocation).
// settle() afterwards copies only the bytes the handlers left unconsumed into
// owned storage. An idle connection therefore holds no buffer memory at all.
//
// Thread-safety: none; a Buffer belongs to one connection on one loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <sys/types.h>

namespace keel {

class Buffer {
 public:
  Buffer() noexcept = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  [[nodiscard]] std::size_t readableBytes() const noexcept { return write_ - read_; }
  [[nodiscard]] bool empty() const noexcept { return write_ == read_; }
  [[nodiscard]] std::size_t writableBytes() const noexcept { return cap_ - write_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return borrowed() ? 0 : cap_; }
  // Borrowed storage is never the owned block, which data_ is otherwise.
  [[nodiscard]] bool borrowed() const noexcept { return data_ != owned_.get(); }

  [[nodiscard]] const char* peek() const noexcept { return data_ + read_; }
  [[nodiscard]] std::span<const char> readable() const noexcept { return {peek(), readableBytes()}; }
  [[nodiscard]] std::string_view view() const noexcept { return {peek(), readableBytes()}; }

  void retrieve(std::size_t n) noexcept {
    if (n >= readableBytes()) {
      retrieveAll();
    } else {
      read_ += n;
    }
  }
  void retrieveAll() noexcept { read_ = write_ = 0; }
  [[nodiscard]] std::string retrieveAsString(std::size_t n);

  void append(const void* data, std::size_t n);
  void append(std::span<const char> s) { append(s.data(), s.size()); }
  void append(std::string_view s) { append(s.data(), s.size()); }
  void appendU32BE(std::uint32_t v);
  [[nodiscard]] std::uint32_t peekU32BE() const noexcept;  // needs 4 readable bytes

  // Room for at least n more bytes (compacting or growing as needed).
  void ensureWritable(std::size_t n);
  [[nodiscard]] char* beginWrite() noexcept { return data_ + write_; }
  void hasWritten(std::size_t n) noexcept { write_ += n; }

  // One readv: into the spare room, then into `scratch`, reading at most
  // `limit` bytes in all. Bytes that land in scratch are appended. Returns
  // what readv returned (errno set on -1).
  ssize_t readFrom(int fd, std::span<char> scratch, std::size_t limit);

  // Lends `region` (which must outlive the lending) to an empty buffer.
  void borrow(std::span<char> region) noexcept;
  // Ends a borrow, keeping unconsumed bytes in owned storage; on an owned
  // buffer that is empty, frees storage above `keepCapacity`.
  void settle(std::size_t keepCapacity = 64 * 1024);
  // Frees all storage (the buffer must not be borrowed); contents are dropped.
  void release() noexcept;

 private:
  void reallocate(std::size_t needed);

  std::unique_ptr<char[]> owned_;
  char* data_ = nullptr;
  std::size_t cap_ = 0;
  std::size_t ownedCap_ = 0;  // capacity of owned_, kept while borrowing
  std::size_t read_ = 0;
  std::size_t write_ = 0;
};

}  // namespace keel
