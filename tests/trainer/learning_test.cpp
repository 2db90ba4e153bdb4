// The model learns: the tiny MLA config, trained on the default corpus (Debian's fortunes, character-level) for
// 500 steps on the CPU (about a minute on 2 cores), reaches a validation loss well below the unigram entropy of the
// training characters. The unigram entropy H1 = -sum p(c) ln p(c) is the loss of the best model that ignores
// context, so a loss under 0.75 H1 can only come from having learned how characters follow each other. The
// threshold is computed from the data, not copied from an earlier run.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "data/dataset_manifest.h"
#include "data/prepare.h"
#include "data/token_shard.h"
#include "support/prerequisites.h"
#include "support/temp_dir.h"
#include "trainer/trainer.h"

namespace fs = std::filesystem;

TEST(Learning, TinyMlaBeatsTheUnigramEntropyOnTheDefaultCorpus) {
  MLAGPT_REQUIRE_INSTALLED(fs::is_directory(mlagpt::data::kDefaultCorpusDir),
                           mlagpt::data::kDefaultCorpusDir << " is missing: install the fortunes package");
  mlagpt::testing::TempDir dir;
  mlagpt::data::PrepareConfig prepare;
  prepare.tokenizer = "char";
  prepare.out = dir / "data";
  mlagpt::data::prepare_dataset(prepare);

  // H1 over the training tokens.
  const auto manifest = mlagpt::data::read_dataset_manifest(dir / "data");
  std::vector<double> counts(static_cast<size_t>(manifest.tokenizer.vocab_size), 0.0);
  double total = 0;
  for (const auto& shard : manifest.train.shards) {
    const mlagpt::data::ShardReader reader(dir / "data" / shard.file);
    std::vector<int64_t> tokens(static_cast<size_t>(reader.num_tokens()));
    reader.read(0, tokens);
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

  static int argc = 0;
  static char** argv = nullptr;
  const mlagpt::launch::Runtime runtime(&argc, &argv);
  const auto config = mlagpt::trainer::read_train_config(
      fs::path(MLAGPT_SOURCE_DIR) / "launch" / "configs" / "tiny_mla.toml",
      {"--data.dir=" + (dir / "data").string(), "--run.out_dir=" + (dir / "run").string(), "--run.max_steps=500",
       "--run.log_every=100", "--eval.every=500", "--eval.sample_tokens=0", "--checkpoint.every=0"});
  const auto start = std::chrono::steady_clock::now();
  mlagpt::trainer::Trainer trainer(config, runtime);
  trainer.train("");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double loss = trainer.last_eval().loss;
  std::printf("[learning] unigram entropy %.3f nats, threshold %.3f, validation loss %.3f after 500 steps in %.0f s\n",
              unigram_entropy, 0.75 * unigram_entropy, loss, seconds);
  EXPECT_GT(trainer.last_eval().tokens, 0);
  EXPECT_LT(loss, 0.75 * unigram_entropy);
}
