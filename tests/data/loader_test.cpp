// The sample order and the loader: every window has y = x shifted by one, an epoch visits every window once, the
// order is fixed by the seed, resuming is exact, 1, 2 and 4 ranks see one global stream (also across a resume with
// another rank count), the prefetch thread stops cleanly and passes its errors on, bad inputs are refused with the
// file and values named, and the validation pass covers every validation window once, in order.
//
// Token k * 4096 + p sits at position p of shard k (shards shorter than 4096 tokens, at most 16 of them, vocabulary
// 65536), so a row of x names the window it came from: shard x[0] / 4096, start x[0] % 4096.
#include "data/loader.h"

#include <ATen/Context.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "data/prefetcher.h"
#include "data/sample_order.h"
#include "data/token_shard.h"
#include "launch/error.h"
#include "support/error_text.h"
#include "support/temp_dir.h"

using mlagpt::testing::error_of;

namespace {

using mlagpt::data::Batch;
using mlagpt::data::FeistelPermutation;
using mlagpt::data::LoaderConfig;
using mlagpt::data::Prefetcher;
using mlagpt::data::SampleOrder;
using mlagpt::data::ShardInfo;
using mlagpt::data::ShardWriter;
using mlagpt::data::TokenLoader;
using mlagpt::data::ValidationPass;
using mlagpt::data::Window;
using mlagpt::testing::TempDir;

constexpr int64_t kShardStride = 4096;  // token k * 4096 + p at position p of shard k

ShardInfo info(int64_t vocab = 65536, const std::string& tokenizer = "byte", char sha = 'a') {
  return {vocab, vocab - 1, tokenizer, std::string(64, sha)};
}

std::filesystem::path write_shard(const std::filesystem::path& path, int64_t shard, int64_t tokens,
                                  const ShardInfo& shard_info = info()) {
  std::vector<int32_t> document(static_cast<size_t>(tokens));
  for (int64_t p = 0; p < tokens; ++p) {
    document[static_cast<size_t>(p)] = static_cast<int32_t>(shard * kShardStride + p);
  }
  ShardWriter writer(path, shard_info, tokens, 1);
  writer.add_document(document);
  writer.finish();
  return path;
}

std::vector<std::filesystem::path> write_shards(const TempDir& dir, const std::string& prefix,
                                                const std::vector<int64_t>& sizes) {
  std::vector<std::filesystem::path> paths;
  for (size_t k = 0; k < sizes.size(); ++k) {
    paths.push_back(
        write_shard(dir / (prefix + "_0000" + std::to_string(k) + ".h5"), static_cast<int64_t>(k), sizes[k]));
  }
  return paths;
}

// Every window of shards of these sizes, in shard order, computed independently of SampleOrder.
std::vector<Window> all_windows(const std::vector<int64_t>& sizes, int64_t T) {
  std::vector<Window> windows;
  for (size_t k = 0; k < sizes.size(); ++k) {
    for (int64_t start = 0; start + T + 1 <= sizes[k]; start += T) {
      windows.push_back({static_cast<int64_t>(k), start});
    }
  }
  return windows;
}

// The windows of a batch's rows, after checking that each row is a real window of T+1 tokens: x consecutive
// tokens of one shard, y the same shifted by one.
std::vector<Window> windows_of(const Batch& batch) {
  const int64_t rows = batch.x.size(0);
  const int64_t T = batch.x.size(1);
  EXPECT_EQ(batch.x.scalar_type(), at::kLong);
  EXPECT_EQ(batch.y.scalar_type(), at::kLong);
  EXPECT_EQ(batch.y.sizes(), batch.x.sizes());
  EXPECT_TRUE(batch.x.is_contiguous() && batch.y.is_contiguous());
  const int64_t* x = batch.x.data_ptr<int64_t>();
  const int64_t* y = batch.y.data_ptr<int64_t>();
  std::vector<Window> windows;
  for (int64_t b = 0; b < rows; ++b) {
    const int64_t first = x[b * T];
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_EQ(x[b * T + t], first + t) << "row " << b << " position " << t;
      EXPECT_EQ(y[b * T + t], first + t + 1) << "row " << b << " position " << t;
    }
    windows.push_back({first / kShardStride, first % kShardStride});
  }
  return windows;
}

bool same_batch(const Batch& a, const Batch& b) {
  return at::equal(a.x, b.x) && at::equal(a.y, b.y);
}

LoaderConfig config(std::vector<std::filesystem::path> shards, int64_t B, int64_t T, int rank = 0, int ranks = 1,
                    uint64_t seed = 1234) {
  LoaderConfig c;
  c.shards = std::move(shards);
  c.batch_size = B;
  c.seq_len = T;
  c.rank = rank;
  c.world_size = ranks;
  c.seed = seed;
  return c;
}

// Four shards, the third holding two windows only: M = 62 + 32 + 2 + 127 = 223 windows of T = 16.
class LoaderTest : public ::testing::Test {
 protected:
  static constexpr int64_t T = 16;
  const std::vector<int64_t> sizes_{1000, 517, 33, 2033};
  TempDir dir_;
  std::vector<std::filesystem::path> shards_ = write_shards(dir_, "train", sizes_);
  std::vector<Window> windows_ = all_windows(sizes_, T);
};

}  // namespace

TEST(FeistelPermutation, IsABijectionOfItsDomain) {
  for (const uint64_t size : {1, 2, 3, 1000, 1024, 1025}) {
    for (const uint64_t key : {0ULL, 1ULL, 0xdeadbeefULL}) {
      const FeistelPermutation permutation(size, key);
      std::vector<int> hits(size, 0);
      for (uint64_t i = 0; i < size; ++i) {
        const uint64_t image = permutation(i);
        ASSERT_LT(image, size) << "size " << size << " key " << key;
        ++hits[image];
      }
      EXPECT_EQ(std::count(hits.begin(), hits.end(), 1), static_cast<long>(size)) << "size " << size;
    }
  }
}

TEST(FeistelPermutation, KeysGiveDifferentShuffles) {
  std::set<std::vector<uint64_t>> orders;
  for (uint64_t key = 0; key < 8; ++key) {
    const FeistelPermutation permutation(1000, key);
    std::vector<uint64_t> order;
    int fixed_points = 0;
    for (uint64_t i = 0; i < 1000; ++i) {
      order.push_back(permutation(i));
      fixed_points += order.back() == i ? 1 : 0;
    }
    EXPECT_LT(fixed_points, 20) << "key " << key << " barely moves anything";  // ~1 expected of a random one
    orders.insert(order);
  }
  EXPECT_EQ(orders.size(), 8U);
  // Even two elements get both orders from some keys.
  std::set<uint64_t> first_of_two;
  for (uint64_t key = 0; key < 32; ++key) {
    first_of_two.insert(FeistelPermutation(2, key)(0));
  }
  EXPECT_EQ(first_of_two.size(), 2U);
}

TEST(SampleOrder, NumbersTheWindowsOfAllShardsInShardOrder) {
  const std::vector<int64_t> sizes{1000, 16, 17, 33, 1};  // 16 and 1 tokens: no window at T = 16
  const SampleOrder order(sizes, 16, 7);
  const auto expected = all_windows(sizes, 16);
  ASSERT_EQ(order.num_windows(), static_cast<int64_t>(expected.size()));
  EXPECT_EQ(order.num_windows(), 62 + 0 + 1 + 2 + 0);
  for (int64_t w = 0; w < order.num_windows(); ++w) {
    EXPECT_EQ(order.window(w), expected[static_cast<size_t>(w)]) << "window " << w;
  }
  EXPECT_THROW(SampleOrder({16, 3}, 16, 7), mlagpt::DataError);
  EXPECT_THROW(SampleOrder({100}, 0, 7), mlagpt::ConfigError);
}

TEST(SampleOrder, EveryEpochIsADifferentPermutation) {
  const SampleOrder order({5000}, 10, 99);  // M = 499, not a power of two
  const int64_t M = order.num_windows();
  std::vector<std::vector<int64_t>> epochs(3);
  for (int64_t g = 0; g < 3 * M; ++g) {
    epochs[static_cast<size_t>(g / M)].push_back(order.window_of_sample(g));
  }
  for (auto epoch : epochs) {
    std::sort(epoch.begin(), epoch.end());
    for (int64_t w = 0; w < M; ++w) {
      ASSERT_EQ(epoch[static_cast<size_t>(w)], w);
    }
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
}

TEST(SampleOrder, RankBatchNeedsTheWorldSizeToDivideTheGlobalBatch) {
  EXPECT_EQ(mlagpt::data::rank_batch_size(32, 4), 8);
  const std::string message = error_of([] { mlagpt::data::rank_batch_size(30, 4); });
  EXPECT_NE(message.find("global batch (30)"), std::string::npos) << message;
  EXPECT_NE(message.find("world size (4)"), std::string::npos) << message;
  EXPECT_THROW(mlagpt::data::rank_batch_size(0, 1), mlagpt::ConfigError);
}

TEST_F(LoaderTest, OneEpochVisitsEveryWindowOnceWithYShiftedByOne) {
  TokenLoader loader(config(shards_, 8, T));
  const int64_t M = loader.samples_per_epoch();
  ASSERT_EQ(M, static_cast<int64_t>(windows_.size()));
  ASSERT_EQ(M, 223);
  std::map<std::pair<int64_t, int64_t>, int> visits;
  int64_t g = 0;
  while (g < M) {
    EXPECT_EQ(loader.position(), g);
    EXPECT_EQ(loader.epoch(), 0);
    const Batch batch = loader.next();
    EXPECT_EQ(batch.x.sizes(), (at::IntArrayRef{8, T}));
    EXPECT_TRUE(batch.x.device().is_cpu());
    for (const Window& w : windows_of(batch)) {
      if (g++ < M) {
        ++visits[{w.shard, w.start}];
      }
    }
  }
  EXPECT_EQ(loader.epoch(), 1);  // 28 steps of 8 = 224: the last batch took the first sample of epoch 1
  ASSERT_EQ(visits.size(), windows_.size());
  for (const Window& w : windows_) {
    EXPECT_EQ((visits[{w.shard, w.start}]), 1) << "shard " << w.shard << " start " << w.start;
  }
}

TEST_F(LoaderTest, TheSeedFixesTheOrder) {
  TokenLoader a(config(shards_, 8, T, 0, 1, 5));
  TokenLoader b(config(shards_, 8, T, 0, 1, 5));
  TokenLoader c(config(shards_, 8, T, 0, 1, 6));
  bool c_differs = false;
  for (int step = 0; step < 40; ++step) {  // across the epoch boundary at step 27
    const Batch batch_a = a.next();
    EXPECT_TRUE(same_batch(batch_a, b.next())) << "step " << step;
    c_differs = c_differs || !same_batch(batch_a, c.next());
  }
  EXPECT_TRUE(c_differs);
}

TEST_F(LoaderTest, ResumingFromAPositionGivesTheBatchesOfAnUninterruptedRun) {
  TokenLoader uninterrupted(config(shards_, 8, T));
  int64_t saved = 0;
  {
    TokenLoader interrupted(config(shards_, 8, T));
    for (int step = 0; step < 25; ++step) {
      EXPECT_TRUE(same_batch(interrupted.next(), uninterrupted.next()));
    }
    saved = interrupted.position();
  }  // the job stops with batches still queued
  EXPECT_EQ(saved, 25 * 8);
  TokenLoader resumed(config(shards_, 8, T));
  resumed.next();  // whatever it did before the seek does not matter
  resumed.seek(saved);
  EXPECT_EQ(resumed.position(), saved);
  for (int step = 0; step < 10; ++step) {  // across the epoch boundary
    EXPECT_TRUE(same_batch(resumed.next(), uninterrupted.next())) << "step " << step;
  }
  EXPECT_THROW(resumed.seek(-1), mlagpt::ConfigError);
}

TEST_F(LoaderTest, OneTwoAndFourRanksSeeTheSameGlobalStream) {
  constexpr int64_t G = 8;
  TokenLoader single(config(shards_, G, T));
  std::map<int, std::vector<std::unique_ptr<TokenLoader>>> jobs;
  for (const int ranks : {2, 4}) {
    for (int r = 0; r < ranks; ++r) {
      jobs[ranks].push_back(std::make_unique<TokenLoader>(config(shards_, G / ranks, T, r, ranks)));
    }
  }
  for (int step = 0; step < 60; ++step) {  // two epochs and a bit
    const Batch global = single.next();
    for (auto& [ranks, loaders] : jobs) {
      std::vector<at::Tensor> xs;
      std::vector<at::Tensor> ys;
      for (auto& loader : loaders) {
        EXPECT_EQ(loader->position(), single.position() - G);  // the same counter on every rank
        Batch part = loader->next();
        EXPECT_EQ(part.x.size(0), G / ranks);
        xs.push_back(part.x);
        ys.push_back(part.y);
      }
      EXPECT_TRUE(same_batch(global, {at::cat(xs), at::cat(ys)})) << ranks << " ranks, step " << step;
    }
  }
}

TEST_F(LoaderTest, ResumingOnAnotherNumberOfRanksContinuesTheSameStream) {
  constexpr int64_t G = 8;
  TokenLoader single(config(shards_, G, T));
  int64_t saved = 0;
  {
    std::vector<std::unique_ptr<TokenLoader>> two;
    for (int r = 0; r < 2; ++r) {
      two.push_back(std::make_unique<TokenLoader>(config(shards_, G / 2, T, r, 2)));
    }
    for (int step = 0; step < 11; ++step) {
      single.next();
      for (auto& loader : two) {
        loader->next();
      }
    }
    saved = two[0]->position();
    EXPECT_EQ(saved, two[1]->position());
  }
  std::vector<std::unique_ptr<TokenLoader>> four;
  for (int r = 0; r < 4; ++r) {
    four.push_back(std::make_unique<TokenLoader>(config(shards_, G / 4, T, r, 4)));
    four.back()->seek(saved);
  }
  for (int step = 0; step < 25; ++step) {
    const Batch global = single.next();
    std::vector<at::Tensor> xs;
    std::vector<at::Tensor> ys;
    for (auto& loader : four) {
      Batch part = loader->next();
      xs.push_back(part.x);
      ys.push_back(part.y);
    }
    EXPECT_TRUE(same_batch(global, {at::cat(xs), at::cat(ys)})) << "step " << step;
  }
}

// The loader recycles batch buffers once nothing refers to them: a batch, or a view of one, that the consumer keeps
// is never written again, and recycled buffers carry the right windows.
TEST_F(LoaderTest, BatchesTheConsumerStillHoldsAreNeverOverwritten) {
  auto c = config(shards_, 8, T);
  c.prefetch = 1;
  TokenLoader loader(c);
  TokenLoader reference(c);
  const Batch kept = loader.next();
  const Batch kept_copy{kept.x.clone(), kept.y.clone()};
  at::Tensor view = reference.next().x.narrow(0, 2, 3);  // only a view of the batch survives
  const at::Tensor view_copy = view.clone();
  for (int step = 1; step < 60; ++step) {  // several epochs of 27 steps: every free buffer is reused many times
    const Batch batch = loader.next();
    const Batch expected = reference.next();
    EXPECT_TRUE(same_batch(batch, expected)) << "step " << step;
    windows_of(batch);
  }
  EXPECT_TRUE(same_batch(kept, kept_copy)) << "a batch still held was overwritten";
  EXPECT_TRUE(at::equal(view, view_copy)) << "a view of a batch still held was overwritten";
}

TEST_F(LoaderTest, DestroyingALoaderWithAFullQueueReturns) {
  auto c = config(shards_, 8, T);
  c.prefetch = 2;
  TokenLoader loader(c);
  loader.next();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // time to fill the queue again
}  // the destructor must stop the waiting producer (CTest's timeout would catch a hang)

TEST(Prefetcher, StopsWhileWaitingOnAFullQueue) {
  std::atomic<int64_t> produced{0};
  {
    Prefetcher<int64_t> prefetcher([&](int64_t i) { return ++produced, i; }, 1, 3);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (produced < 3 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_EQ(produced, 3);  // the queue is full: the producer waits
  }
  EXPECT_EQ(produced, 3);
}

TEST(Prefetcher, DeliversItemsInOrderThenTheProducersError) {
  Prefetcher<int64_t> prefetcher(
      [](int64_t i) -> int64_t {
        if (i == 30) {
          throw mlagpt::DataError("no item 30");
        }
        return i * i;
      },
      10, 2, 0);
  EXPECT_EQ(prefetcher.pop(), 0);
  EXPECT_EQ(prefetcher.pop(), 100);
  EXPECT_EQ(prefetcher.pop(), 400);
  EXPECT_EQ(prefetcher.next_index(), 30);
  EXPECT_THROW(prefetcher.pop(), mlagpt::DataError);
  EXPECT_THROW(prefetcher.pop(), mlagpt::DataError);  // and again, until restarted
  prefetcher.restart(40);
  EXPECT_EQ(prefetcher.pop(), 1600);
  prefetcher.restart(5);
  EXPECT_EQ(prefetcher.pop(), 25);
  EXPECT_EQ(prefetcher.pop(), 225);
}

TEST_F(LoaderTest, RefusesBadInputNamingTheFileAndTheValues) {
  const auto expect_error = [](const LoaderConfig& c, const std::vector<std::string>& parts) {
    const std::string message = error_of([&] { TokenLoader loader(c); });
    for (const auto& part : parts) {
      EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
    }
  };
  const auto short_shard = write_shard(dir_ / "short.h5", 5, 16);
  expect_error(config({shards_[0], short_shard}, 8, T), {short_shard.string(), "16 tokens", "17"});

  const auto big_vocab = write_shard(dir_ / "big_vocab.h5", 1, 100, info(70000));
  expect_error(config({shards_[0], big_vocab}, 8, T),
               {big_vocab.string(), shards_[0].string(), "vocab_size", "70000", "65536"});

  const auto char_shard = write_shard(dir_ / "char.h5", 1, 100, info(65536, "char"));
  expect_error(config({shards_[0], char_shard}, 8, T), {char_shard.string(), "tokenizer", "char", "byte"});

  const auto other_model = write_shard(dir_ / "other_model.h5", 1, 100, info(65536, "byte", 'b'));
  expect_error(config({shards_[0], other_model}, 8, T),
               {other_model.string(), "tokenizer_sha256", std::string(64, 'a'), std::string(64, 'b')});

  expect_error(config({}, 8, T), {"empty"});
  expect_error(config({dir_ / "missing.h5"}, 8, T), {"missing.h5"});
  expect_error(config(shards_, 0, T), {"batch_size 0"});
  expect_error(config(shards_, 8, T, 4, 4), {"rank 4", "world_size 4"});
  auto no_prefetch = config(shards_, 8, T);
  no_prefetch.prefetch = 0;
  expect_error(no_prefetch, {"prefetch 0"});
  if (!at::hasCUDA()) {
    auto cuda = config(shards_, 8, T);
    cuda.device = c10::Device(c10::kCUDA, 0);
    expect_error(cuda, {"cuda:0", "not available"});
  }
}

TEST(ValidationPass, CoversEveryWindowOnceInOrderWithTheSameStepsOnEveryRank) {
  TempDir dir;
  const std::vector<int64_t> sizes{1000, 517, 33};
  const auto shards = write_shards(dir, "val", sizes);
  const auto expected = all_windows(sizes, 16);  // 96 windows
  for (const auto& [B, ranks] : std::vector<std::pair<int64_t, int>>{{5, 3}, {8, 1}, {96, 1}, {7, 4}, {200, 2}}) {
    std::vector<std::unique_ptr<ValidationPass>> passes;
    for (int r = 0; r < ranks; ++r) {
      passes.push_back(std::make_unique<ValidationPass>(config(shards, B, 16, r, ranks)));
    }
    const int64_t G = B * ranks;
    const int64_t steps = passes[0]->num_steps();
    EXPECT_EQ(steps, (96 + G - 1) / G);
    for (int round = 0; round < 2; ++round) {  // a second evaluation after reset() sees the same
      std::vector<Window> seen;
      for (int64_t step = 0; step < steps; ++step) {
        for (auto& pass : passes) {
          EXPECT_FALSE(pass->done());
          const auto batch = pass->next();
          EXPECT_EQ(batch.last, step == steps - 1);
          EXPECT_LE(batch.batch.x.size(0), B);
          EXPECT_EQ(batch.batch.x.size(1), 16);
          const auto windows = windows_of(batch.batch);
          seen.insert(seen.end(), windows.begin(), windows.end());
        }
      }
      EXPECT_EQ(seen, expected) << "B " << B << ", " << ranks << " ranks";
      for (auto& pass : passes) {
        EXPECT_TRUE(pass->done());
        EXPECT_THROW(pass->next(), mlagpt::Error);
        pass->reset();
      }
    }
  }
}
