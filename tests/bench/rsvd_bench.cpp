// The randomized SVD (linalg/rsvd.h, linalg/sharded_rsvd.h) against the exact answer and against PyTorch's
// torch.svd_lowrank, measured in one run (issue 9). Not a CTest test: timings on a shared machine mean little.
//
// Matrices: A = U diag(sigma) V^T [m, n], U and V the Q factors of float64 Gaussian matrices (seed --seed), so that
// the optimal rank-k errors are known: sigma_{k+1} in the spectral norm, sqrt(sum_{j>k} sigma_j^2) in Frobenius.
// Spectra: geometric sigma_j = r^(j-1) (--geometric-ratio) and slow sigma_j = j^-e (--slow-exponent), j = 1..min(m, n).
// The decompositions compute in --dtype (float32 by default, or float64); the errors are measured in float64 against
// the float64 A: Frobenius exactly (the dense residual), the spectral norm of the residual by a block Krylov (Lanczos)
// iteration on E^T E with full reorthogonalization, stopped when the top Ritz pair's residual bounds the relative
// error of sigma_max(E) by 5e-5 (a posteriori: an eigenvalue of E^T E lies within ||E^T E z - theta z|| of theta;
// Ritz values never exceed the largest one), or --spectral-norm exact (LAPACK svdvals of the residual) to check it.
// Each timing is the median of --repeats runs after --warmup runs, with --threads intra-op threads.
//
// --mode single (default): for each matrix, at::linalg_svd (the full SVD, truncated to k for its errors) and
//   rsvd() at every k (--ranks) and q (--power-iters) with l = k + --oversample; one JSON line per measurement in
//   DIR/mlagpt.jsonl (and on stdout). It also writes each float64 A to DIR/<matrix>.bin (raw, row-major) and
//   DIR/manifest.json, from which tests/bench/rsvd_torch.py times torch.linalg.svd and torch.svd_lowrank on the same
//   matrices with the same settings and writes their factors.
// --mode evaluate: the errors of the factors rsvd_torch.py wrote (DIR/torch.jsonl), measured exactly as ours, into
//   DIR/torch_errors.jsonl. rsvd_torch.py then prints the combined table (tests/bench/rsvd_bench.sh runs all four).
// --mode sharded (under mpiexec): sharded_rsvd() over all ranks, split by rows and by columns, with CholeskyQR2 and
//   TSQR: the median time (the slowest rank's) against rsvd() of the whole matrix with the same QR method on rank 0
//   alone with all the process's CPUs (the other ranks wait without spinning), the bytes each rank sends
//   (CountingCommunicator) against the figure of linalg/sharded_rsvd.h's header, and the errors. Defaults there:
//   --spectra geometric, q = 2. Every rank builds the whole test matrix and passes sharded_rsvd() only its block.
//
// Run:
//   tests/bench/rsvd_bench.sh                          # build/ci/tests/bench/rsvd_bench + rsvd_torch.py, the table
//   build/ci/tests/bench/rsvd_bench --sizes 1024x1024 --ranks 64 --power-iters 2 --dir /tmp/rsvd
//   tests/bench/rsvd_bench.sh --sharded 4                # the same under mpiexec -n 4, as below
//   export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # Open MPI run as root (containers, CI)
//   mpiexec --oversubscribe --bind-to none -n 2 build/ci/tests/bench/rsvd_bench --mode sharded
// (--bind-to none: Open MPI binds each of 2 ranks to one core, which would leave rank 0's one-rank reference one
// core; 4 ranks on 2 cores are oversubscribed, and the table says so.) --device cuda moves the single-mode run to the
// GPU; it says so and measures nothing without a device (the cusolverDnXgesvdr comparison is not written yet).
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/linalg_eigh.h>
#include <ATen/ops/linalg_qr.h>
#include <ATen/ops/linalg_svd.h>
#include <ATen/ops/linalg_svdvals.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/zeros.h>
#include <fmt/format.h>
#include <mpi.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "launch/backend_versions.h"
#include "launch/error.h"
#include "launch/mpi_check.h"
#include "launch/runtime.h"
#include "linalg/rsvd.h"
#include "linalg/sharded_rsvd.h"
#include "support/counting_communicator.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using mlagpt::ConfigError;
using mlagpt::IoError;
using mlagpt::linalg::QrMethod;
using mlagpt::linalg::Split;
using nlohmann::json;

constexpr uint64_t kKrylovSeed = 20260;     // the start block of the spectral-norm iteration
constexpr int64_t kKrylovBlock = 16;        // its block size: clustered top singular values need a wide block
constexpr double kKrylovTolerance = 1e-4;   // ||E^T E z - theta z|| / theta: sigma to 5e-5 relative
constexpr int64_t kKrylovMaxColumns = 640;  // at most 40 blocks (or n, where the basis is then exact)

struct BenchConfig {
  std::string mode = "single";
  std::vector<std::string> sizes{"1024x1024", "2048x2048", "4096x1024"};
  std::vector<int64_t> ranks{64, 256};
  std::vector<int64_t> power_iters{0, 1, 2};
  std::vector<std::string> spectra{"geometric", "slow"};
  std::vector<std::string> splits{"rows", "columns"};
  std::vector<std::string> qr_methods{"cholesky_qr2", "tsqr"};
  int64_t oversample = 10;
  double geometric_ratio = 0.98;
  double slow_exponent = 1.0;
  std::string dtype = "float32";
  std::string device = "cpu";
  std::string spectral_norm = "krylov";
  int repeats = 3;
  int warmup = 1;
  int threads = 2;
  uint64_t seed = 1;
  uint64_t sketch_seed = 0;
  std::string dir;
  bool full_svd = true;
};

struct MatrixSpec {
  int64_t m = 0;
  int64_t n = 0;
  std::string spectrum;
  std::string name() const { return fmt::format("{}x{}_{}", m, n, spectrum); }
};

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

std::string load_average() {
  std::ifstream file("/proc/loadavg");
  std::string one, five, fifteen;
  file >> one >> five >> fifteen;
  return fmt::format("{} {} {}", one, five, fifteen);
}

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "float64") return at::kDouble;
  throw ConfigError(fmt::format("--dtype: expected float32 or float64, got '{}'", name));
}

std::pair<int64_t, int64_t> parse_size(const std::string& text) {
  const auto x = text.find('x');
  try {
    size_t used_m = 0;
    size_t used_n = 0;
    const int64_t m = std::stoll(text.substr(0, x), &used_m);
    const int64_t n = x == std::string::npos ? 0 : std::stoll(text.substr(x + 1), &used_n);
    if (x != std::string::npos && used_m == x && used_n == text.size() - x - 1 && m > 0 && n > 0) {
      return {m, n};
    }
  } catch (const std::exception&) {
  }
  throw ConfigError(fmt::format("--sizes: expected MxN with positive M and N, got '{}'", text));
}

// sigma_1 >= ... >= sigma_r, r = min(m, n), float64.
at::Tensor spectrum_values(const std::string& spectrum, int64_t r, const BenchConfig& config) {
  std::vector<double> values(static_cast<size_t>(r));
  for (int64_t j = 1; j <= r; ++j) {
    values[static_cast<size_t>(j - 1)] = spectrum == "geometric"
                                             ? std::pow(config.geometric_ratio, static_cast<double>(j - 1))
                                             : std::pow(static_cast<double>(j), -config.slow_exponent);
  }
  return at::tensor(values, at::kDouble);
}

std::string spectrum_formula(const std::string& spectrum, const BenchConfig& config) {
  return spectrum == "geometric" ? fmt::format("sigma_j = {}^(j-1)", config.geometric_ratio)
                                 : fmt::format("sigma_j = j^-{}", config.slow_exponent);
}

// A = U diag(sigma) V^T in float64 from random orthogonal factors; the same matrix on every rank for one seed.
at::Tensor make_matrix(const MatrixSpec& spec, const at::Tensor& sigma, uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t r = std::min(spec.m, spec.n);
  const auto options = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor u = std::get<0>(at::linalg_qr(at::randn({spec.m, r}, generator, options), "reduced"));  // [m, r]
  const at::Tensor v = std::get<0>(at::linalg_qr(at::randn({spec.n, r}, generator, options), "reduced"));  // [n, r]
  return (u * sigma.unsqueeze(0)).mm(v.t()).contiguous();                                                  // [m, n]
}

void write_raw(const fs::path& path, const at::Tensor& tensor) {
  const at::Tensor contiguous = tensor.contiguous().cpu();
  std::ofstream file(path, std::ios::binary);
  file.write(static_cast<const char*>(contiguous.const_data_ptr()),
             static_cast<std::streamsize>(contiguous.numel() * contiguous.element_size()));
  if (!file) {
    throw IoError(fmt::format("{}: cannot write", path.string()));
  }
}

at::Tensor read_raw(const fs::path& path, std::vector<int64_t> shape, at::ScalarType dtype) {
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
  const auto bytes = static_cast<std::streamsize>(tensor.numel() * tensor.element_size());
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw IoError(fmt::format("{}: cannot open", path.string()));
  }
  if (static_cast<std::streamsize>(fs::file_size(path)) != bytes) {
    throw IoError(fmt::format("{}: {} bytes, expected {} for [{}] {}", path.string(), fs::file_size(path), bytes,
                              fmt::join(shape, ", "), c10::toString(dtype)));
  }
  file.read(static_cast<char*>(tensor.data_ptr()), bytes);
  return tensor;
}

// ---- errors ------------------------------------------------------------------------------------------------------

struct SpectralNorm {
  double value = 0;
  double bound = 0;  // relative error bound of value (0 for the exact method)
  int64_t columns = 0;
  bool converged = true;
};

// sigma_max(e) by block Lanczos on e^T e (e tall, or its transpose): Rayleigh-Ritz on the Krylov basis
// K = [X, (e^T e) X, ...], kept orthonormal by two passes of Gram-Schmidt and a QR per block.
SpectralNorm krylov_spectral_norm(const at::Tensor& e_any) {
  const at::Tensor e = e_any.size(0) >= e_any.size(1) ? e_any : e_any.t();  // [m, n], m >= n
  const int64_t n = e.size(1);
  const int64_t max_columns = std::min(n, kKrylovMaxColumns);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(kKrylovSeed);
  const int64_t block = std::min(kKrylovBlock, n);
  at::Tensor basis = std::get<0>(at::linalg_qr(at::randn({n, block}, generator, e.options()), "reduced"));  // K
  at::Tensor image = e.mm(basis);         // e K [m, c]
  at::Tensor gram = image.t().mm(image);  // K^T e^T e K [c, c]
  SpectralNorm result;
  while (true) {
    auto [eigenvalues, eigenvectors] = at::linalg_eigh(gram);
    const int64_t c = basis.size(1);
    const double theta = eigenvalues[c - 1].item<double>();
    const at::Tensor y = eigenvectors.narrow(1, c - 1, 1);  // [c, 1]
    result.columns = c;
    if (theta <= 0) {
      result.value = 0;
      result.bound = 0;
      return result;
    }
    const at::Tensor z = basis.mm(y);
    const double residual = (e.t().mm(image.mm(y)) - theta * z).norm().item<double>();
    result.value = std::sqrt(theta);
    result.bound = 0.5 * residual / theta;  // |d sigma| / sigma = |d lambda| / (2 lambda)
    if (residual <= kKrylovTolerance * theta || c == n) {
      result.converged = true;
      return result;
    }
    if (c + block > max_columns) {
      result.converged = false;
      return result;
    }
    at::Tensor next = e.t().mm(image.narrow(1, c - block, block));  // (e^T e) times the newest block [n, b]
    for (int pass = 0; pass < 2; ++pass) {
      next = next - basis.mm(basis.t().mm(next));
    }
    next = std::get<0>(at::linalg_qr(next, "reduced"));
    const at::Tensor next_image = e.mm(next);
    const at::Tensor cross = image.t().mm(next_image);  // [c, b]
    gram = at::cat({at::cat({gram, cross}, 1), at::cat({cross.t(), next_image.t().mm(next_image)}, 1)}, 0);
    basis = at::cat({basis, next}, 1);
    image = at::cat({image, next_image}, 1);
  }
}

struct Errors {
  double spectral = 0;
  double frobenius = 0;
  SpectralNorm norm;
};

// u [m, k], s [k], v [n, k] in any floating dtype; a64 the float64 matrix.
Errors approximation_errors(const at::Tensor& a64, const at::Tensor& u, const at::Tensor& s, const at::Tensor& v,
                            const std::string& method) {
  const at::Tensor u64 = u.cpu().to(at::kDouble);
  const at::Tensor v64 = v.cpu().to(at::kDouble);
  const at::Tensor s64 = s.cpu().to(at::kDouble);
  const at::Tensor residual = a64 - (u64 * s64.unsqueeze(0)).mm(v64.t());  // [m, n]
  Errors errors;
  errors.frobenius = residual.norm().item<double>();
  if (method == "exact") {
    errors.norm.value = at::linalg_svdvals(residual)[0].item<double>();
  } else {
    errors.norm = krylov_spectral_norm(residual);
  }
  errors.spectral = errors.norm.value;
  return errors;
}

struct Optimal {
  double spectral = 0;
  double frobenius = 0;
};

Optimal optimal_errors(const at::Tensor& sigma, int64_t k) {
  const int64_t r = sigma.size(0);
  if (k >= r) {
    return {};
  }
  const at::Tensor tail = sigma.narrow(0, k, r - k);
  return {sigma[k].item<double>(), tail.norm().item<double>()};
}

json error_fields(const Errors& errors, const Optimal& optimal) {
  return {{"spectral_err", errors.spectral},
          {"spectral_opt", optimal.spectral},
          {"spectral_ratio", errors.spectral / optimal.spectral},
          {"frob_err", errors.frobenius},
          {"frob_opt", optimal.frobenius},
          {"frob_ratio", errors.frobenius / optimal.frobenius},
          {"spectral_norm_bound", errors.norm.bound},
          {"spectral_norm_columns", errors.norm.columns},
          {"spectral_norm_converged", errors.norm.converged}};
}

json qr_fields(const mlagpt::linalg::QrReport& report) {
  return {{"cholesky_qr2", report.cholesky_qr2},
          {"shifted_cholesky_qr3", report.shifted_cholesky_qr3},
          {"householder", report.householder}};
}

// ---- timing ------------------------------------------------------------------------------------------------------

// Waits for the device's queued work (a CUDA stream), so that the clock sees it; nothing on the CPU.
void synchronize(const at::Tensor& tensor) {
  if (!tensor.is_cpu()) {
    (void)tensor.sum().item<double>();
  }
}

struct Timing {
  double median_s = 0;
  std::vector<double> times_s;
};

// rsvd() of the whole matrix on rank 0 alone: what --mode sharded compares with.
struct OneRank {
  mlagpt::linalg::RsvdResult result;
  Timing timing;
  double spectral_ratio = 0;
};

template <class Run>
Timing time_median(const BenchConfig& config, Run&& run) {
  Timing timing;
  for (int i = 0; i < config.warmup + config.repeats; ++i) {
    const auto start = Clock::now();
    run();
    const double elapsed = seconds_since(start);
    if (i >= config.warmup) {
      timing.times_s.push_back(elapsed);
    }
  }
  timing.median_s = median(timing.times_s);
  return timing;
}

json case_fields(const MatrixSpec& spec, const BenchConfig& config) {
  return {{"matrix", spec.name()},     {"m", spec.m},           {"n", spec.n},
          {"spectrum", spec.spectrum}, {"dtype", config.dtype}, {"threads", config.threads},
          {"device", config.device}};
}

// One JSON line to the results file and to stdout, and a line of progress to stderr.
void emit(std::ofstream& jsonl, const json& record) {
  jsonl << record.dump() << '\n';
  jsonl.flush();
  std::cout << record.dump() << std::endl;
  std::string progress =
      fmt::format("  {} {}", record.at("impl").get<std::string>(), record.at("matrix").get<std::string>());
  for (const char* key : {"k", "q"}) {
    if (record.contains(key)) {
      progress += fmt::format(" {}={}", key, record.at(key).get<int64_t>());
    }
  }
  progress += fmt::format(": {:.4f} s", record.at("time_s").get<double>());
  if (record.contains("spectral_ratio")) {
    progress += fmt::format(", spectral error / optimal {:.4f}", record.at("spectral_ratio").get<double>());
  }
  fmt::print(stderr, "{}\n", progress);
}

std::vector<MatrixSpec> matrix_specs(const BenchConfig& config) {
  std::vector<MatrixSpec> specs;
  for (const auto& size : config.sizes) {
    const auto [m, n] = parse_size(size);
    for (const auto& spectrum : config.spectra) {
      if (spectrum != "geometric" && spectrum != "slow") {
        throw ConfigError(fmt::format("--spectra: expected geometric or slow, got '{}'", spectrum));
      }
      for (const int64_t k : config.ranks) {
        if (k <= 0 || k > std::min(m, n)) {
          throw ConfigError(fmt::format("--ranks: k = {} is outside [1, min({}, {})]", k, m, n));
        }
      }
      specs.push_back({m, n, spectrum});
    }
  }
  return specs;
}

// ---- --mode single -----------------------------------------------------------------------------------------------

mlagpt::linalg::RsvdOptions rsvd_options(const BenchConfig& config, int64_t k, int64_t q) {
  mlagpt::linalg::RsvdOptions options;
  options.k = k;
  options.oversample = config.oversample;
  options.power_iters = q;
  options.seed = config.sketch_seed;
  return options;
}

int run_single(const BenchConfig& config, const fs::path& dir) {
  const at::ScalarType dtype = parse_dtype(config.dtype);
  const at::Device device(config.device == "cuda" ? at::kCUDA : at::kCPU);
  const auto specs = matrix_specs(config);
  json manifest = {{"dtype", config.dtype},
                   {"device", config.device},
                   {"threads", config.threads},
                   {"oversample", config.oversample},
                   {"ranks", config.ranks},
                   {"power_iters", config.power_iters},
                   {"repeats", config.repeats},
                   {"warmup", config.warmup},
                   {"sketch_seed", config.sketch_seed},
                   {"spectral_norm", config.spectral_norm},
                   {"matrices", json::array()}};
  std::ofstream jsonl(dir / "mlagpt.jsonl");
  fmt::print(stderr, "rsvd_bench: {} threads, {}, on {}, load average {}; results in {}\n", config.threads,
             config.dtype, config.device, load_average(), dir.string());
  for (const auto& spec : specs) {
    const at::Tensor sigma = spectrum_values(spec.spectrum, std::min(spec.m, spec.n), config);
    const at::Tensor a64 = make_matrix(spec, sigma, config.seed);
    write_raw(dir / (spec.name() + ".bin"), a64);
    write_raw(dir / (spec.name() + ".sigma.bin"), sigma);
    manifest["matrices"].push_back({{"name", spec.name()},
                                    {"m", spec.m},
                                    {"n", spec.n},
                                    {"spectrum", spec.spectrum},
                                    {"formula", spectrum_formula(spec.spectrum, config)},
                                    {"file", spec.name() + ".bin"}});
    std::ofstream(dir / "manifest.json") << manifest.dump(2) << '\n';
    const at::Tensor a = a64.to(device, dtype);

    if (config.full_svd) {
      std::tuple<at::Tensor, at::Tensor, at::Tensor> svd;
      const Timing timing = time_median(config, [&] {
        svd = at::linalg_svd(a, /*full_matrices=*/false);
        synchronize(std::get<1>(svd));
      });
      const auto& [u, s, vh] = svd;
      for (const int64_t k : config.ranks) {
        const Errors errors = approximation_errors(a64, u.narrow(1, 0, k), s.narrow(0, 0, k), vh.narrow(0, 0, k).t(),
                                                   config.spectral_norm);
        json record = case_fields(spec, config);
        record.update({{"impl", "at::linalg_svd"}, {"k", k}, {"time_s", timing.median_s}, {"times_s", timing.times_s}});
        record.update(error_fields(errors, optimal_errors(sigma, k)));
        emit(jsonl, record);
      }
    }
    for (const int64_t k : config.ranks) {
      for (const int64_t q : config.power_iters) {
        mlagpt::linalg::RsvdOptions options = rsvd_options(config, k, q);
        options.qr = mlagpt::linalg::parse_qr_method(config.qr_methods.front());
        mlagpt::linalg::RsvdResult result;
        const Timing timing = time_median(config, [&] {
          result = mlagpt::linalg::rsvd(a, options);
          synchronize(result.s);
        });
        const Errors errors = approximation_errors(a64, result.u, result.s, result.v, config.spectral_norm);
        json record = case_fields(spec, config);
        record.update({{"impl", "mlagpt::linalg::rsvd"},
                       {"k", k},
                       {"l", result.sketch_width},
                       {"q", q},
                       {"qr_method", config.qr_methods.front()},
                       {"time_s", timing.median_s},
                       {"times_s", timing.times_s},
                       {"exact", result.exact},
                       {"describe", result.describe()},
                       {"qr", qr_fields(result.qr)}});
        record.update(error_fields(errors, optimal_errors(sigma, k)));
        emit(jsonl, record);
      }
    }
  }
  fmt::print(stderr, "rsvd_bench: done, load average {}\n", load_average());
  return 0;
}

// ---- --mode evaluate ---------------------------------------------------------------------------------------------

int run_evaluate(const fs::path& dir) {
  std::ifstream manifest_file(dir / "manifest.json");
  if (!manifest_file) {
    throw IoError(fmt::format("{}: cannot open (run --mode single first)", (dir / "manifest.json").string()));
  }
  const json manifest = json::parse(manifest_file);
  std::ifstream input(dir / "torch.jsonl");
  if (!input) {
    throw IoError(fmt::format("{}: cannot open (run rsvd_torch.py measure first)", (dir / "torch.jsonl").string()));
  }
  std::ofstream output(dir / "torch_errors.jsonl");
  std::string loaded;
  at::Tensor a64;
  at::Tensor sigma;
  std::string line;
  while (std::getline(input, line)) {
    json record = json::parse(line);
    if (!record.contains("u")) {
      emit(output, record);  // a timing without factors (torch.linalg.svd)
      continue;
    }
    const std::string name = record.at("matrix");
    const int64_t m = record.at("m");
    const int64_t n = record.at("n");
    const int64_t k = record.at("k");
    if (name != loaded) {
      a64 = read_raw(dir / (name + ".bin"), {m, n}, at::kDouble);
      sigma = read_raw(dir / (name + ".sigma.bin"), {std::min(m, n)}, at::kDouble);
      loaded = name;
    }
    const at::ScalarType dtype = parse_dtype(record.at("factor_dtype"));
    const at::Tensor u = read_raw(dir / record.at("u").get<std::string>(), {m, k}, dtype);
    const at::Tensor s = read_raw(dir / record.at("s").get<std::string>(), {k}, dtype);
    const at::Tensor v = read_raw(dir / record.at("v").get<std::string>(), {n, k}, dtype);
    record.update(
        error_fields(approximation_errors(a64, u, s, v, manifest.at("spectral_norm")), optimal_errors(sigma, k)));
    emit(output, record);
  }
  return 0;
}

// ---- --mode sharded ----------------------------------------------------------------------------------------------

// A barrier during which the waiting ranks sleep instead of polling: on an oversubscribed machine a spinning rank
// would take CPU time from the one that is being timed.
void sleeping_barrier(bool mpi) {
  if (!mpi) {
    return;
  }
  MPI_Request request = MPI_REQUEST_NULL;
  MLAGPT_MPI_CHECK(MPI_Ibarrier(MPI_COMM_WORLD, &request));
  int done = 0;
  while (done == 0) {
    MLAGPT_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
    if (done == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

std::vector<int64_t> even_split(int64_t total, int parts) {
  std::vector<int64_t> sizes(static_cast<size_t>(parts), total / parts);
  for (int64_t r = 0; r < total % parts; ++r) {
    ++sizes[static_cast<size_t>(r)];
  }
  return sizes;
}

// Every rank's block of rows [rows_r, cols], stacked in rank order (blocks may differ in size: padded to the largest).
at::Tensor gather_rows(const at::Tensor& local, const std::vector<int64_t>& rows_per_rank,
                       mlagpt::launch::Communicator& comm) {
  const int64_t most = *std::max_element(rows_per_rank.begin(), rows_per_rank.end());
  at::Tensor padded = at::zeros({most, local.size(1)}, local.options());
  padded.narrow(0, 0, local.size(0)).copy_(local);
  at::Tensor gathered = at::empty({most * comm.size(), local.size(1)}, local.options());
  comm.all_gather(padded, gathered);
  std::vector<at::Tensor> blocks;
  for (int r = 0; r < comm.size(); ++r) {
    blocks.push_back(gathered.narrow(0, r * most, rows_per_rank[static_cast<size_t>(r)]));
  }
  return at::cat(blocks, 0);
}

// Bytes each rank sends, by the formula of linalg/sharded_rsvd.h's header, for the path without QR fallbacks.
int64_t analytic_bytes(Split split, int64_t m, int64_t n, int64_t k, int64_t p, int64_t q, QrMethod method,
                       int64_t element_size) {
  const int64_t s = std::min(m, n);
  const int64_t l = std::min(k + p, s);
  const int64_t c = method == QrMethod::kTsqr ? 1 : 2;
  const int64_t agreement = 10 * 8;  // the 10-int64 agreement all-gather
  int64_t values = 0;
  if (k + p >= s) {
    if (split == Split::kRows) {
      values = m > n ? c * s * s + n * s : n * s;
    } else {
      values = n > m ? c * s * s : m * s + c * s * s;
    }
  } else {
    values = (q + 1) * (split == Split::kRows ? n : m) * l + c * (q + 1) * l * l;
  }
  return agreement + values * element_size;
}

int run_sharded(const BenchConfig& config, const mlagpt::launch::Runtime& runtime) {
  const auto& info = runtime.info();
  const bool root = info.rank == 0;
  const at::ScalarType dtype = parse_dtype(config.dtype);
  const auto world = runtime.world_cpu_communicator();
  mlagpt::testing::CountingCommunicator counting(*world);
  const int cpus = mlagpt::launch::available_cpus();
  const int rank_threads = mlagpt::launch::threads_per_process(cpus, info.local_size);
  const bool oversubscribed = static_cast<int64_t>(rank_threads) * info.local_size > cpus;
  if (root) {
    fmt::print(stderr,
               "rsvd_bench --mode sharded: {} ranks x {} thread(s) on {} CPUs{}; one-rank reference: rank 0 alone with "
               "{} threads; load average {}\n",
               info.world_size, rank_threads, cpus, oversubscribed ? " (OVERSUBSCRIBED)" : "", cpus, load_average());
  }
  std::vector<json> records;
  for (const auto& spec : matrix_specs(config)) {
    const at::Tensor sigma = spectrum_values(spec.spectrum, std::min(spec.m, spec.n), config);
    const at::Tensor a64 = make_matrix(spec, sigma, config.seed);
    const at::Tensor a = a64.to(dtype);
    for (const int64_t k : config.ranks) {
      for (const int64_t q : config.power_iters) {
        mlagpt::linalg::RsvdOptions options = rsvd_options(config, k, q);
        // The one-rank references (one per QR method), with every CPU, while the other ranks sleep.
        at::set_num_threads(cpus);
        std::map<std::string, OneRank> references;
        if (root) {
          for (const auto& method_name : config.qr_methods) {
            options.qr = mlagpt::linalg::parse_qr_method(method_name);
            OneRank& one = references[method_name];
            one.timing = time_median(config, [&] { one.result = mlagpt::linalg::rsvd(a, options); });
            one.spectral_ratio =
                approximation_errors(a64, one.result.u, one.result.s, one.result.v, config.spectral_norm).spectral /
                optimal_errors(sigma, k).spectral;
          }
        }
        sleeping_barrier(info.mpi);
        at::set_num_threads(rank_threads);
        for (const auto& split_name : config.splits) {
          if (split_name != "rows" && split_name != "columns") {
            throw ConfigError(fmt::format("--splits: expected rows or columns, got '{}'", split_name));
          }
          const Split split = split_name == "rows" ? Split::kRows : Split::kColumns;
          const auto sizes = even_split(split == Split::kRows ? spec.m : spec.n, info.world_size);
          int64_t offset = 0;
          for (int r = 0; r < info.rank; ++r) {
            offset += sizes[static_cast<size_t>(r)];
          }
          const int64_t mine = sizes[static_cast<size_t>(info.rank)];
          const at::Tensor block = a.narrow(split == Split::kRows ? 0 : 1, offset, mine).contiguous();
          for (const auto& method_name : config.qr_methods) {
            options.qr = mlagpt::linalg::parse_qr_method(method_name);
            mlagpt::linalg::RsvdResult result;
            Timing timing;
            for (int i = 0; i < config.warmup + config.repeats; ++i) {
              world->barrier();
              counting.reset();
              const auto start = Clock::now();
              result = mlagpt::linalg::sharded_rsvd(block, split, counting, options);
              // The job takes as long as its slowest rank.
              at::Tensor elapsed = at::tensor(std::vector<double>{seconds_since(start)}, at::kDouble);
              world->all_reduce(elapsed, mlagpt::launch::ReduceOp::kMax);
              if (i >= config.warmup) {
                timing.times_s.push_back(elapsed.item<double>());
              }
            }
            timing.median_s = median(timing.times_s);
            // Bytes and calls of the last run; every rank should send the same.
            at::Tensor counts =
                at::tensor(std::vector<int64_t>{counting.bytes(), -counting.bytes(), counting.calls()}, at::kLong);
            world->all_reduce(counts, mlagpt::launch::ReduceOp::kMax);
            const int64_t most_bytes = counts[0].item<int64_t>();
            const int64_t least_bytes = -counts[1].item<int64_t>();
            // The factors, whole, on every rank (the evaluation runs on rank 0).
            const at::Tensor u = split == Split::kRows ? gather_rows(result.u.contiguous(), sizes, *world) : result.u;
            const at::Tensor v =
                split == Split::kColumns ? gather_rows(result.v.contiguous(), sizes, *world) : result.v;
            at::set_num_threads(cpus);
            if (root) {
              const int64_t expected =
                  analytic_bytes(split, spec.m, spec.n, k, config.oversample, q, options.qr, at::elementSize(dtype));
              const bool fallback = result.qr.shifted_cholesky_qr3 > 0 ||
                                    (options.qr == QrMethod::kCholeskyQr2 && result.qr.householder > 0);
              const Errors errors = approximation_errors(a64, u, result.s, v, config.spectral_norm);
              const OneRank& one = references.at(method_name);
              const at::Tensor& reference_s = one.result.s;
              const double s_diff = ((result.s.to(at::kDouble) - reference_s.to(at::kDouble)).abs().max() /
                                     reference_s[0].to(at::kDouble))
                                        .item<double>();
              json record = case_fields(spec, config);
              record.update({{"impl", "mlagpt::linalg::sharded_rsvd"},
                             {"ranks_mpi", info.world_size},
                             {"split", split_name},
                             {"qr_method", method_name},
                             {"threads", rank_threads},
                             {"cpus", cpus},
                             {"oversubscribed", oversubscribed},
                             {"k", k},
                             {"l", result.sketch_width},
                             {"q", q},
                             {"time_s", timing.median_s},
                             {"times_s", timing.times_s},
                             {"one_rank_time_s", one.timing.median_s},
                             {"one_rank_spectral_ratio", one.spectral_ratio},
                             {"one_rank_qr", qr_fields(one.result.qr)},
                             {"one_rank_threads", cpus},
                             {"speedup_vs_one_rank", one.timing.median_s / timing.median_s},
                             {"bytes_sent", most_bytes},
                             {"bytes_sent_same_on_all_ranks", most_bytes == least_bytes},
                             {"bytes_analytic", expected},
                             {"bytes_ratio", static_cast<double>(most_bytes) / static_cast<double>(expected)},
                             {"qr_fallback", fallback},
                             {"collective_calls", counts[2].item<int64_t>()},
                             {"s_diff_vs_one_rank", s_diff},
                             {"qr", qr_fields(result.qr)}});
              record.update(error_fields(errors, optimal_errors(sigma, k)));
              std::cout << record.dump() << std::endl;
              records.push_back(record);
            }
            sleeping_barrier(info.mpi);
            at::set_num_threads(rank_threads);
          }
        }
      }
    }
  }
  if (root) {
    fmt::print(
        "\nsharded_rsvd on {} ranks x {} thread(s), {} CPUs{}; one rank = rsvd() on rank 0 with {} threads; "
        "{}, median of {} after {} warmup\n",
        info.world_size, rank_threads, cpus, oversubscribed ? " (OVERSUBSCRIBED: times are not speedups)" : "", cpus,
        config.dtype, config.repeats, config.warmup);
    fmt::print("{:<20} {:>4} {:>4} {:>2} {:<8} {:<13} {:>9} {:>9} {:>7} {:>11} {:>11} {:>6} {:>9} {:>9} {:>9} {}\n",
               "matrix", "k", "l", "q", "split", "qr", "time s", "1-rank s", "1r/t", "bytes", "analytic", "diff",
               "spec/opt", "1r spec", "s diff", "qr paths (cqr2/scqr3/hh)");
    for (const auto& r : records) {
      fmt::print(
          "{:<20} {:>4} {:>4} {:>2} {:<8} {:<13} {:>9.4f} {:>9.4f} {:>7.2f} {:>11} {:>11} {:>+6} {:>9.4f} "
          "{:>9.4f} {:>9.1e} {}/{}/{}{}{}\n",
          r["matrix"].get<std::string>(), r["k"].get<int64_t>(), r["l"].get<int64_t>(), r["q"].get<int64_t>(),
          r["split"].get<std::string>(), r["qr_method"].get<std::string>(), r["time_s"].get<double>(),
          r["one_rank_time_s"].get<double>(), r["speedup_vs_one_rank"].get<double>(), r["bytes_sent"].get<int64_t>(),
          r["bytes_analytic"].get<int64_t>(), r["bytes_sent"].get<int64_t>() - r["bytes_analytic"].get<int64_t>(),
          r["spectral_ratio"].get<double>(), r["one_rank_spectral_ratio"].get<double>(),
          r["s_diff_vs_one_rank"].get<double>(), r["qr"]["cholesky_qr2"].get<int64_t>(),
          r["qr"]["shifted_cholesky_qr3"].get<int64_t>(), r["qr"]["householder"].get<int64_t>(),
          r["bytes_sent_same_on_all_ranks"].get<bool>() ? "" : " (bytes differ by rank)",
          r["qr_fallback"].get<bool>() ? " (QR fallback: not in the analytic figure)" : "");
    }
    fmt::print(
        "bytes: sent by each rank (CountingCommunicator: all-reduce tensors, all-gather inputs) in the last run; "
        "analytic: linalg/sharded_rsvd.h's formula; diff = bytes - analytic\n"
        "1 rank: rsvd() of the whole matrix with the same QR method (1r spec: its spectral error / optimal; s diff: "
        "max |S - S_1rank| / S_1rank[0])\n");
    fmt::print("load average at the end: {}\n", load_average());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  mlagpt::launch::Runtime runtime(&argc, &argv);
  CLI::App app("rsvd_bench: the randomized SVD against the full SVD and torch.svd_lowrank (issue 9)");
  BenchConfig config;
  app.add_option("--mode", config.mode, "single, evaluate (torch's factors) or sharded (under mpiexec)")
      ->check(CLI::IsMember({"single", "evaluate", "sharded"}));
  app.add_option("--sizes", config.sizes, "matrices MxN")->delimiter(',');
  app.add_option("--ranks", config.ranks, "target ranks k")->delimiter(',');
  app.add_option("--power-iters", config.power_iters, "power iterations q (sharded default: 2)")->delimiter(',');
  app.add_option("--spectra", config.spectra, "geometric and/or slow (sharded default: geometric)")->delimiter(',');
  app.add_option("--splits", config.splits, "sharded: rows and/or columns")->delimiter(',');
  app.add_option("--qr", config.qr_methods, "cholesky_qr2 and/or tsqr (single mode: the first)")->delimiter(',');
  app.add_option("--oversample", config.oversample, "p: the sketch has l = k + p columns")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--geometric-ratio", config.geometric_ratio, "geometric spectrum: sigma_j = r^(j-1)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--slow-exponent", config.slow_exponent, "slow spectrum: sigma_j = j^-e")->check(CLI::PositiveNumber);
  app.add_option("--dtype", config.dtype, "compute dtype")->check(CLI::IsMember({"float32", "float64"}));
  app.add_option("--device", config.device, "single mode: cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--spectral-norm", config.spectral_norm, "krylov (block Lanczos) or exact (svdvals of the residual)")
      ->check(CLI::IsMember({"krylov", "exact"}));
  app.add_option("--repeats", config.repeats, "timed runs per case (the median is reported)")
      ->check(CLI::PositiveNumber);
  app.add_option("--warmup", config.warmup, "untimed runs before them")->check(CLI::NonNegativeNumber);
  app.add_option("--threads", config.threads, "intra-op threads (single mode)")->check(CLI::PositiveNumber);
  app.add_option("--seed", config.seed, "seed of the test matrices");
  app.add_option("--sketch-seed", config.sketch_seed, "RsvdOptions::seed");
  app.add_option("--dir", config.dir, "where matrices and results go (default: a fresh directory under the temp dir)");
  app.add_flag("--full-svd,!--no-full-svd", config.full_svd, "time at::linalg_svd too (default on)");
  CLI11_PARSE(app, argc, argv);

  try {
    if (config.mode == "sharded") {
      if (app.count("--power-iters") == 0) {
        config.power_iters = {2};
      }
      if (app.count("--spectra") == 0) {
        config.spectra = {"geometric"};
      }
      return run_sharded(config, runtime);
    }
    if (runtime.info().world_size > 1) {
      throw ConfigError(fmt::format("--mode {} runs in one process, not under mpiexec ({} ranks)", config.mode,
                                    runtime.info().world_size));
    }
    at::set_num_threads(config.threads);
    if (config.device == "cuda" && mlagpt::launch::cuda_device_count() == 0) {
      fmt::print("rsvd_bench: no CUDA device present ({}): --device cuda measures nothing\n",
                 mlagpt::launch::cuda_summary());
      std::cout << json{{"device", "cuda"}, {"skipped", "no CUDA device present"}}.dump() << std::endl;
      return 0;
    }
    const fs::path dir = config.dir.empty()
                             ? fs::temp_directory_path() / fmt::format("mlagpt-rsvd-bench-{}", ::getpid())
                             : fs::path(config.dir);
    fs::create_directories(dir);
    if (config.mode == "evaluate") {
      return run_evaluate(dir);
    }
    return run_single(config, dir);
  } catch (const std::exception& e) {
    fmt::print(stderr, "rsvd_bench: {}\n", e.what());
    runtime.abort(1);
    return 1;
  }
}
