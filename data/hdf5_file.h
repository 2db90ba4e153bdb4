// A thin RAII layer over the HDF5 C API: files, datasets (1-D or N-D, optionally chunked) with hyperslab reads and
// writes, and scalar attributes. Token shards and checkpoints are written with it; anything it writes opens in
// h5py and h5dump.
//
// Errors throw mlagpt::Hdf5Error naming the file (and dataset or attribute) and HDF5's own innermost message; HDF5's
// automatic printing of its error stack is turned off. HDF5 (as Debian builds it) is not thread-safe: use one File
// from one thread at a time, and do not use HDF5 from two threads at once.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "launch/error.h"

namespace mlagpt::data {

// HDF5's innermost error message on this thread's error stack, or "" when the stack is empty.
std::string hdf5_error_message();

// "HDF5 1.10.8 (built with 1.10.8)"
std::string hdf5_version();

[[noreturn]] void throw_hdf5_error(const char* expr, const std::string& context, const char* file, int line);

}  // namespace mlagpt::data

// Runs an HDF5 call (herr_t or hid_t result; negative = failure) and throws mlagpt::Hdf5Error naming `context`
// (a file path, dataset or attribute), the expression, HDF5's message, file, line, rank and host.
#define MLAGPT_HDF5_CHECK(call, context)                                      \
  ([&]() {                                                                    \
    auto mlagpt_h5_rc_ = (call);                                              \
    if (mlagpt_h5_rc_ < 0) {                                                  \
      ::mlagpt::data::throw_hdf5_error(#call, (context), __FILE__, __LINE__); \
    }                                                                         \
    return mlagpt_h5_rc_;                                                     \
  }())

namespace mlagpt::data::h5 {

// Owns one hid_t and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  void reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// The HDF5 native type of T (uint8/16/32/64, int32/64, float, double).
template <typename T>
hid_t native_type();

class Dataset {
 public:
  Dataset(Handle handle, std::string name, std::string file)
      : handle_(std::move(handle)), name_(std::move(name)), file_(std::move(file)) {}
  std::vector<uint64_t> shape() const;
  // The element size in bytes and whether it is an unsigned integer / floating type, to check a file's dtype.
  size_t element_bytes() const;
  H5T_class_t type_class() const;
  bool is_unsigned() const;
  // Chunk dimensions, empty for a contiguous dataset.
  std::vector<uint64_t> chunk_shape() const;

  // Reads or writes the hyperslab starting at `offset` with extent `count` (one entry per dimension);
  // `data` holds product(count) elements in row-major order.
  template <typename T>
  void write(std::span<const T> data, const std::vector<uint64_t>& offset, const std::vector<uint64_t>& count);
  template <typename T>
  void read(std::span<T> data, const std::vector<uint64_t>& offset, const std::vector<uint64_t>& count) const;
  // The whole dataset.
  template <typename T>
  std::vector<T> read_all() const;
  // Writes what HDF5 still buffers of this dataset to the file: closing it would too, but cannot report a failure.
  void flush();

  hid_t id() const { return handle_.get(); }
  const std::string& name() const { return name_; }

 private:
  std::string context() const { return file_ + ":" + name_; }
  void transfer(bool writing, hid_t type, void* data, size_t elements, const std::vector<uint64_t>& offset,
                const std::vector<uint64_t>& count) const;
  Handle handle_;
  std::string name_;
  std::string file_;
};

class File {
 public:
  // Creates (or, with `overwrite`, truncates) a file. Parent directories must exist.
  static File create(const std::filesystem::path& path, bool overwrite = false);
  // Opens an existing file; a missing file or one that is not HDF5 throws IoError naming it.
  static File open(const std::filesystem::path& path, bool writable = false);

  // `chunk` empty = contiguous layout. Intermediate groups in `name` ("a/b/c") are created.
  template <typename T>
  Dataset create_dataset(const std::string& name, const std::vector<uint64_t>& shape,
                         const std::vector<uint64_t>& chunk = {});
  Dataset open_dataset(const std::string& name) const;
  bool exists(const std::string& name) const;

  // Root-group (or `object`'s) scalar attributes.
  void set_attribute(const std::string& name, const std::string& value, const std::string& object = "/");
  void set_attribute(const std::string& name, int64_t value, const std::string& object = "/");
  void set_attribute(const std::string& name, double value, const std::string& object = "/");
  bool has_attribute(const std::string& name, const std::string& object = "/") const;
  std::string string_attribute(const std::string& name, const std::string& object = "/") const;
  int64_t int_attribute(const std::string& name, const std::string& object = "/") const;
  double float_attribute(const std::string& name, const std::string& object = "/") const;

  // Flushes HDF5's buffers to the OS (does not fsync). A writer calls it before the file goes away: closing would
  // flush too, but cannot report a failure (a full disk).
  void flush();
  hid_t id() const { return handle_.get(); }
  const std::string& path() const { return path_; }

 private:
  File(Handle handle, std::string path) : handle_(std::move(handle)), path_(std::move(path)) {}
  Handle open_object(const std::string& object) const;
  void write_attribute(const std::string& name, const std::string& object, hid_t type, const void* value);
  void read_attribute(const std::string& name, const std::string& object, hid_t type, void* value) const;
  Handle handle_;
  std::string path_;
};

}  // namespace mlagpt::data::h5
