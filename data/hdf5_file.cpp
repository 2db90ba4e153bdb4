#include "data/hdf5_file.h"

#include <fmt/format.h>

#include <cstring>
#include <numeric>

namespace mlagpt::data {
namespace {

// Once per process, before HDF5 initializes itself: turn off its printing of its error stack (errors reach callers
// as exceptions instead), and its clean-up at exit. That clean-up closes every file still open, and a file whose
// close failed (a full disk: the failure reaches the writer through flush()) is still open, half torn down, and
// HDF5 1.10 crashes on it; every File closes itself when it goes away, so nothing is left for the clean-up to do.
void prepare_hdf5() {
  static const bool prepared = [] {
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)prepared;
}

herr_t keep_innermost(unsigned n, const H5E_error2_t* error, void* message) {
  if (n == 0 && error->desc != nullptr) {
    *static_cast<std::string*>(message) = error->desc;
  }
  return 0;
}

}  // namespace

std::string hdf5_error_message() {
  std::string message;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, &message);
  return message;
}

std::string hdf5_version() {
  unsigned major = 0;
  unsigned minor = 0;
  unsigned release = 0;
  H5get_libversion(&major, &minor, &release);
  return fmt::format("HDF5 {}.{}.{} (built with {}.{}.{})", major, minor, release, H5_VERS_MAJOR, H5_VERS_MINOR,
                     H5_VERS_RELEASE);
}

void throw_hdf5_error(const char* expr, const std::string& context, const char* file, int line) {
  std::string detail = context;
  const std::string message = hdf5_error_message();
  if (!message.empty()) {
    detail += ": " + message;
  }
  H5Eclear2(H5E_DEFAULT);
  throw Hdf5Error(describe_failure("HDF5", expr, detail, file, line));
}

}  // namespace mlagpt::data

namespace mlagpt::data::h5 {

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    closer_ = other.closer_;
    other.id_ = H5I_INVALID_HID;
  }
  return *this;
}

void Handle::reset() {
  if (id_ >= 0 && closer_ != nullptr) {
    closer_(id_);
  }
  id_ = H5I_INVALID_HID;
}

template <>
hid_t native_type<uint8_t>() {
  return H5T_NATIVE_UINT8;
}
template <>
hid_t native_type<uint16_t>() {
  return H5T_NATIVE_UINT16;
}
template <>
hid_t native_type<uint32_t>() {
  return H5T_NATIVE_UINT32;
}
template <>
hid_t native_type<uint64_t>() {
  return H5T_NATIVE_UINT64;
}
template <>
hid_t native_type<int32_t>() {
  return H5T_NATIVE_INT32;
}
template <>
hid_t native_type<int64_t>() {
  return H5T_NATIVE_INT64;
}
template <>
hid_t native_type<float>() {
  return H5T_NATIVE_FLOAT;
}
template <>
hid_t native_type<double>() {
  return H5T_NATIVE_DOUBLE;
}

// ---- Dataset -------------------------------------------------------------------------------------------------

std::vector<uint64_t> Dataset::shape() const {
  Handle space(MLAGPT_HDF5_CHECK(H5Dget_space(id()), context()), H5Sclose);
  const int rank = MLAGPT_HDF5_CHECK(H5Sget_simple_extent_ndims(space.get()), context());
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  MLAGPT_HDF5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), context());
  return {dims.begin(), dims.end()};
}

size_t Dataset::element_bytes() const {
  Handle type(MLAGPT_HDF5_CHECK(H5Dget_type(id()), context()), H5Tclose);
  return H5Tget_size(type.get());
}

H5T_class_t Dataset::type_class() const {
  Handle type(MLAGPT_HDF5_CHECK(H5Dget_type(id()), context()), H5Tclose);
  return H5Tget_class(type.get());
}

bool Dataset::is_unsigned() const {
  Handle type(MLAGPT_HDF5_CHECK(H5Dget_type(id()), context()), H5Tclose);
  return H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_sign(type.get()) == H5T_SGN_NONE;
}

std::vector<uint64_t> Dataset::chunk_shape() const {
  Handle plist(MLAGPT_HDF5_CHECK(H5Dget_create_plist(id()), context()), H5Pclose);
  if (H5Pget_layout(plist.get()) != H5D_CHUNKED) {
    return {};
  }
  std::vector<hsize_t> dims(shape().size());
  MLAGPT_HDF5_CHECK(H5Pget_chunk(plist.get(), static_cast<int>(dims.size()), dims.data()), context());
  return {dims.begin(), dims.end()};
}

void Dataset::transfer(bool writing, hid_t type, void* data, size_t elements, const std::vector<uint64_t>& offset,
                       const std::vector<uint64_t>& count) const {
  const std::vector<uint64_t> dims = shape();
  if (offset.size() != dims.size() || count.size() != dims.size()) {
    throw Hdf5Error(
        fmt::format("{}: hyperslab of rank {} for a dataset of rank {}", context(), offset.size(), dims.size()));
  }
  const uint64_t total = std::accumulate(count.begin(), count.end(), uint64_t{1}, std::multiplies<>());
  if (total != elements) {
    throw Hdf5Error(fmt::format("{}: hyperslab of {} elements for a buffer of {}", context(), total, elements));
  }
  for (size_t d = 0; d < dims.size(); ++d) {
    if (offset[d] + count[d] > dims[d]) {
      throw Hdf5Error(fmt::format("{}: hyperslab [{}, {}) beyond dimension {} of size {}", context(), offset[d],
                                  offset[d] + count[d], d, dims[d]));
    }
  }
  Handle file_space(MLAGPT_HDF5_CHECK(H5Dget_space(id()), context()), H5Sclose);
  const std::vector<hsize_t> start(offset.begin(), offset.end());
  const std::vector<hsize_t> extent(count.begin(), count.end());
  if (!dims.empty()) {
    MLAGPT_HDF5_CHECK(
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, extent.data(), nullptr),
        context());
  }
  Handle memory_space(
      dims.empty()
          ? MLAGPT_HDF5_CHECK(H5Screate(H5S_SCALAR), context())
          : MLAGPT_HDF5_CHECK(H5Screate_simple(static_cast<int>(extent.size()), extent.data(), nullptr), context()),
      H5Sclose);
  if (writing) {
    MLAGPT_HDF5_CHECK(H5Dwrite(id(), type, memory_space.get(), file_space.get(), H5P_DEFAULT, data), context());
  } else {
    MLAGPT_HDF5_CHECK(H5Dread(id(), type, memory_space.get(), file_space.get(), H5P_DEFAULT, data), context());
  }
}

template <typename T>
void Dataset::write(std::span<const T> data, const std::vector<uint64_t>& offset, const std::vector<uint64_t>& count) {
  transfer(true, native_type<T>(), const_cast<T*>(data.data()), data.size(), offset, count);
}

template <typename T>
void Dataset::read(std::span<T> data, const std::vector<uint64_t>& offset, const std::vector<uint64_t>& count) const {
  transfer(false, native_type<T>(), data.data(), data.size(), offset, count);
}

template <typename T>
std::vector<T> Dataset::read_all() const {
  const std::vector<uint64_t> dims = shape();
  const uint64_t total = std::accumulate(dims.begin(), dims.end(), uint64_t{1}, std::multiplies<>());
  std::vector<T> values(total);
  read(std::span<T>(values), std::vector<uint64_t>(dims.size(), 0), dims);
  return values;
}

void Dataset::flush() {
  MLAGPT_HDF5_CHECK(H5Dflush(id()), context());
}

// ---- File ----------------------------------------------------------------------------------------------------

File File::create(const std::filesystem::path& path, bool overwrite) {
  prepare_hdf5();
  const std::string name = path.string();
  Handle handle(MLAGPT_HDF5_CHECK(
                    H5Fcreate(name.c_str(), overwrite ? H5F_ACC_TRUNC : H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT), name),
                H5Fclose);
  return File(std::move(handle), name);
}

File File::open(const std::filesystem::path& path, bool writable) {
  prepare_hdf5();
  const std::string name = path.string();
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    throw IoError(fmt::format("{}: no such file", name));
  }
  if (H5Fis_hdf5(name.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw IoError(fmt::format("{}: not an HDF5 file", name));
  }
  Handle handle(MLAGPT_HDF5_CHECK(H5Fopen(name.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT), name),
                H5Fclose);
  return File(std::move(handle), name);
}

template <typename T>
Dataset File::create_dataset(const std::string& name, const std::vector<uint64_t>& shape,
                             const std::vector<uint64_t>& chunk) {
  const std::string context = path_ + ":" + name;
  const std::vector<hsize_t> dims(shape.begin(), shape.end());
  Handle space(dims.empty()
                   ? MLAGPT_HDF5_CHECK(H5Screate(H5S_SCALAR), context)
                   : MLAGPT_HDF5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), context),
               H5Sclose);
  Handle create_plist(MLAGPT_HDF5_CHECK(H5Pcreate(H5P_DATASET_CREATE), context), H5Pclose);
  // HDF5 stamps every object header with its creation and modification times by default, so the same data written
  // a second later gives different bytes; without them, files are byte-for-byte reproducible (`prepare` relies
  // on it, and checksums in manifests stay meaningful).
  MLAGPT_HDF5_CHECK(H5Pset_obj_track_times(create_plist.get(), false), context);
  if (!chunk.empty()) {
    const std::vector<hsize_t> chunk_dims(chunk.begin(), chunk.end());
    MLAGPT_HDF5_CHECK(H5Pset_chunk(create_plist.get(), static_cast<int>(chunk_dims.size()), chunk_dims.data()),
                      context);
  }
  Handle link_plist(MLAGPT_HDF5_CHECK(H5Pcreate(H5P_LINK_CREATE), context), H5Pclose);
  MLAGPT_HDF5_CHECK(H5Pset_create_intermediate_group(link_plist.get(), 1), context);
  Handle dataset(MLAGPT_HDF5_CHECK(H5Dcreate2(id(), name.c_str(), native_type<T>(), space.get(), link_plist.get(),
                                              create_plist.get(), H5P_DEFAULT),
                                   context),
                 H5Dclose);
  return Dataset(std::move(dataset), name, path_);
}

Dataset File::open_dataset(const std::string& name) const {
  if (!exists(name)) {
    throw Hdf5Error(fmt::format("{}: no dataset {}", path_, name));
  }
  Handle dataset(MLAGPT_HDF5_CHECK(H5Dopen2(id(), name.c_str(), H5P_DEFAULT), path_ + ":" + name), H5Dclose);
  return Dataset(std::move(dataset), name, path_);
}

bool File::exists(const std::string& name) const {
  // H5Lexists needs every intermediate group to exist, so walk the path one component at a time.
  std::string prefix;
  size_t start = name.front() == '/' ? 1 : 0;
  while (start <= name.size()) {
    const size_t end = std::min(name.find('/', start), name.size());
    prefix = name.substr(0, end);
    if (H5Lexists(id(), prefix.c_str(), H5P_DEFAULT) <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    start = end + 1;
  }
  return true;
}

Handle File::open_object(const std::string& object) const {
  return {MLAGPT_HDF5_CHECK(H5Oopen(id(), object.c_str(), H5P_DEFAULT), path_ + ":" + object), H5Oclose};
}

void File::write_attribute(const std::string& name, const std::string& object, hid_t type, const void* value) {
  const std::string context = fmt::format("{}:{} attribute {}", path_, object, name);
  Handle target = open_object(object);
  if (H5Aexists(target.get(), name.c_str()) > 0) {
    MLAGPT_HDF5_CHECK(H5Adelete(target.get(), name.c_str()), context);
  }
  Handle space(MLAGPT_HDF5_CHECK(H5Screate(H5S_SCALAR), context), H5Sclose);
  Handle attribute(
      MLAGPT_HDF5_CHECK(H5Acreate2(target.get(), name.c_str(), type, space.get(), H5P_DEFAULT, H5P_DEFAULT), context),
      H5Aclose);
  MLAGPT_HDF5_CHECK(H5Awrite(attribute.get(), type, value), context);
}

void File::set_attribute(const std::string& name, const std::string& value, const std::string& object) {
  // A fixed-length UTF-8 string: h5py reads it as str, h5dump prints it.
  Handle type(MLAGPT_HDF5_CHECK(H5Tcopy(H5T_C_S1), path_), H5Tclose);
  MLAGPT_HDF5_CHECK(H5Tset_size(type.get(), std::max<size_t>(value.size(), 1)), path_);
  MLAGPT_HDF5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8), path_);
  std::string padded = value;
  padded.resize(std::max<size_t>(value.size(), 1), '\0');
  write_attribute(name, object, type.get(), padded.data());
}

void File::set_attribute(const std::string& name, int64_t value, const std::string& object) {
  write_attribute(name, object, H5T_NATIVE_INT64, &value);
}

void File::set_attribute(const std::string& name, double value, const std::string& object) {
  write_attribute(name, object, H5T_NATIVE_DOUBLE, &value);
}

bool File::has_attribute(const std::string& name, const std::string& object) const {
  if (!exists(object) && object != "/") {
    return false;
  }
  Handle target = open_object(object);
  return H5Aexists(target.get(), name.c_str()) > 0;
}

void File::read_attribute(const std::string& name, const std::string& object, hid_t type, void* value) const {
  const std::string context = fmt::format("{}:{} attribute {}", path_, object, name);
  if (!has_attribute(name, object)) {
    throw Hdf5Error(fmt::format("{}: missing", context));
  }
  Handle target = open_object(object);
  Handle attribute(MLAGPT_HDF5_CHECK(H5Aopen(target.get(), name.c_str(), H5P_DEFAULT), context), H5Aclose);
  MLAGPT_HDF5_CHECK(H5Aread(attribute.get(), type, value), context);
}

std::string File::string_attribute(const std::string& name, const std::string& object) const {
  const std::string context = fmt::format("{}:{} attribute {}", path_, object, name);
  if (!has_attribute(name, object)) {
    throw Hdf5Error(fmt::format("{}: missing", context));
  }
  Handle target = open_object(object);
  Handle attribute(MLAGPT_HDF5_CHECK(H5Aopen(target.get(), name.c_str(), H5P_DEFAULT), context), H5Aclose);
  Handle type(MLAGPT_HDF5_CHECK(H5Aget_type(attribute.get()), context), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_STRING) {
    throw Hdf5Error(fmt::format("{}: not a string", context));
  }
  if (H5Tis_variable_str(type.get()) > 0) {
    // Written by h5py, whose str attributes are variable-length.
    Handle memory_type(MLAGPT_HDF5_CHECK(H5Tcopy(H5T_C_S1), context), H5Tclose);
    MLAGPT_HDF5_CHECK(H5Tset_size(memory_type.get(), H5T_VARIABLE), context);
    MLAGPT_HDF5_CHECK(H5Tset_cset(memory_type.get(), H5Tget_cset(type.get())), context);
    char* text = nullptr;
    MLAGPT_HDF5_CHECK(H5Aread(attribute.get(), memory_type.get(), &text), context);
    std::string value = text != nullptr ? text : "";
    H5free_memory(text);
    return value;
  }
  std::string value(H5Tget_size(type.get()), '\0');
  MLAGPT_HDF5_CHECK(H5Aread(attribute.get(), type.get(), value.data()), context);
  value.resize(std::strlen(value.c_str()));
  return value;
}

int64_t File::int_attribute(const std::string& name, const std::string& object) const {
  int64_t value = 0;
  read_attribute(name, object, H5T_NATIVE_INT64, &value);
  return value;
}

double File::float_attribute(const std::string& name, const std::string& object) const {
  double value = 0;
  read_attribute(name, object, H5T_NATIVE_DOUBLE, &value);
  return value;
}

void File::flush() {
  MLAGPT_HDF5_CHECK(H5Fflush(id(), H5F_SCOPE_LOCAL), path_);
}

#define MLAGPT_HDF5_INSTANTIATE(T)                                                                                 \
  template void Dataset::write<T>(std::span<const T>, const std::vector<uint64_t>&, const std::vector<uint64_t>&); \
  template void Dataset::read<T>(std::span<T>, const std::vector<uint64_t>&, const std::vector<uint64_t>&) const;  \
  template std::vector<T> Dataset::read_all<T>() const;                                                            \
  template Dataset File::create_dataset<T>(const std::string&, const std::vector<uint64_t>&,                       \
                                           const std::vector<uint64_t>&);
MLAGPT_HDF5_INSTANTIATE(uint8_t)
MLAGPT_HDF5_INSTANTIATE(uint16_t)
MLAGPT_HDF5_INSTANTIATE(uint32_t)
MLAGPT_HDF5_INSTANTIATE(uint64_t)
MLAGPT_HDF5_INSTANTIATE(int32_t)
MLAGPT_HDF5_INSTANTIATE(int64_t)
MLAGPT_HDF5_INSTANTIATE(float)
MLAGPT_HDF5_INSTANTIATE(double)
#undef MLAGPT_HDF5_INSTANTIATE

}  // namespace mlagpt::data::h5
