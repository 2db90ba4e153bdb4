// The model learns: the tiny MLA config, trained on the default corpus (Debian's fortunes, character-level) for
// 500 steps on the CPU (a minute or two on 2 free cores), reaches a validation loss clearly below that of a character
// bigram model counted on the training split. The bigram model is the best one can do from the previous character
// alone; the unigram entropy H1 = -sum p(c) ln p(c), the best without context, is only a sanity bound above it.
// Both are computed from the data here, not copied from an earlier run. The bigram's smoothing is the best of a
// grid on the validation split itself, which favours the bigram: the requirement only gets stricter.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "data/dataset_manifest.h"
#include "data/prepare.h"
#include "data/token_shard.h"
#include "support/prerequisites.h"
#include "support/temp_dir.h"
#include "trainer/trainer.h"

namespace fs = std::filesystem;

namespace {

// The validation loss must be under kMargin x the bigram's cross-entropy (about 2.63 nats on this corpus, 0.79 of
// H1). 10% is far more than the bigram's own uncertainty (its smoothing grid spans about a thousandth of a nat) and
// than the spread of losses between parts of the corpus: only context beyond the previous character gets there.
constexpr double kMargin = 0.9;

// The tokens of each shard of a split, one vector per shard (no window crosses a shard's end).
std::vector<std::vector<int64_t>> split_tokens(const fs::path& dataset, const mlagpt::data::SplitRecord& split) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& shard : split.shards) {
    const mlagpt::data::ShardReader reader(dataset / shard.file);
    out.emplace_back(static_cast<size_t>(reader.num_tokens()));
    reader.read(0, out.back());
  }
  return out;
}

// Cross-entropy in nats per predicted token of the bigram model counted on the pairs of `train` with add-alpha
// smoothing over the V tokens, p(b | a) = (n(a, b) + alpha) / (n(a) + alpha V), on the targets of the first
// `windows` validation windows of T + 1 tokens (data/sample_order.h: shard by shard, starting at 0, T, 2T, ...), the
// ones the model's evaluation scores.
double bigram_cross_entropy(const std::vector<std::vector<int64_t>>& train,
                            const std::vector<std::vector<int64_t>>& val, int64_t vocab_size, double alpha,
                            int64_t seq_len, int64_t windows) {
  const auto v = static_cast<size_t>(vocab_size);
  std::vector<double> pairs(v * v, 0.0);  // n(a, b) at a * V + b
  std::vector<double> firsts(v, 0.0);     // n(a)
  for (const auto& tokens : train) {
    for (size_t i = 1; i < tokens.size(); ++i) {
      pairs[static_cast<size_t>(tokens[i - 1]) * v + static_cast<size_t>(tokens[i])] += 1;
      firsts[static_cast<size_t>(tokens[i - 1])] += 1;
    }
  }
  double nats = 0;
  double count = 0;
  for (const auto& tokens : val) {
    const int64_t here = std::min<int64_t>(windows, (static_cast<int64_t>(tokens.size()) - 1) / seq_len);
    windows -= here;
    for (size_t i = 1; i <= static_cast<size_t>(here * seq_len); ++i) {  // targets 1 .. here * T of this shard
      const auto a = static_cast<size_t>(tokens[i - 1]);
      const auto b = static_cast<size_t>(tokens[i]);
      nats -= std::log((pairs[a * v + b] + alpha) / (firsts[a] + alpha * static_cast<double>(vocab_size)));
      count += 1;
    }
  }
  return nats / count;
}

}  // namespace

TEST(Learning, TinyMlaBeatsACharacterBigramModelOnTheDefaultCorpus) {
  MLAGPT_REQUIRE_INSTALLED(fs::is_directory(mlagpt::data::kDefaultCorpusDir),
                           mlagpt::data::kDefaultCorpusDir << " is missing: install the fortunes package");
  mlagpt::testing::TempDir dir;
  mlagpt::data::PrepareConfig prepare;
  prepare.tokenizer = "char";
  prepare.out = dir / "data";
  mlagpt::data::prepare_dataset(prepare);

  const auto manifest = mlagpt::data::read_dataset_manifest(dir / "data");
  const int64_t vocab_size = manifest.tokenizer.vocab_size;
  const auto train_tokens = split_tokens(dir / "data", manifest.train);
  const auto val_tokens = split_tokens(dir / "data", manifest.val);

  // H1 over the training tokens.
  std::vector<double> counts(static_cast<size_t>(vocab_size), 0.0);
  double total = 0;
  for (const auto& tokens : train_tokens) {
    for (const int64_t t : tokens) {
      counts[static_cast<size_t>(t)] += 1;
    }
    total += static_cast<double>(tokens.size());
  }
  double unigram_entropy = 0;
  for (const double c : counts) {
    if (c > 0) {
      unigram_entropy -= c / total * std::log(c / total);
    }
  }

  const auto config = mlagpt::trainer::read_train_config(
      fs::path(MLAGPT_SOURCE_DIR) / "launch" / "configs" / "tiny_mla.toml",
      {"--data.dir=" + (dir / "data").string(), "--run.out_dir=" + (dir / "run").string(), "--run.max_steps=500",
       "--run.log_every=100", "--eval.every=500", "--eval.sample_tokens=0", "--checkpoint.every=0"});
  // The windows the evaluation scores: eval.batches batches of data.batch_size, in shard order.
  const int64_t seq_len = config.seq_len();
  int64_t val_windows = 0;
  for (const auto& tokens : val_tokens) {
    val_windows += (static_cast<int64_t>(tokens.size()) - 1) / seq_len;
  }
  const int64_t windows = std::min(val_windows, config.eval.batches * config.data.batch_size);

  // The strongest bigram of the grid (alpha = 1 is Laplace's rule).
  double bigram = std::numeric_limits<double>::infinity();
  double best_alpha = 0;
  for (const double alpha : {1.0, 0.3, 0.1, 0.03, 0.01}) {
    const double ce = bigram_cross_entropy(train_tokens, val_tokens, vocab_size, alpha, seq_len, windows);
    std::printf("[learning] bigram cross-entropy on val, add-%.2f smoothing: %.4f nats\n", alpha, ce);
    if (ce < bigram) {
      bigram = ce;
      best_alpha = alpha;
    }
  }
  ASSERT_LT(bigram, unigram_entropy);  // or the corpus is not text

  static int argc = 0;
  static char** argv = nullptr;
  const mlagpt::launch::Runtime runtime(&argc, &argv);

  const auto start = std::chrono::steady_clock::now();
  mlagpt::trainer::Trainer trainer(config, runtime);
  trainer.train("");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double loss = trainer.last_eval().loss;
  std::printf(
      "[learning] unigram entropy %.3f nats, bigram (add-%.2f) %.3f nats, threshold %.3f; validation loss %.3f "
      "over %ld tokens after 500 steps in %.0f s\n",
      unigram_entropy, best_alpha, bigram, kMargin * bigram, loss, static_cast<long>(trainer.last_eval().tokens),
      seconds);
  // The model was scored on the very targets the bigram was.
  EXPECT_EQ(trainer.last_eval().tokens, windows * seq_len);
  EXPECT_LT(loss, kMargin * bigram);
}
