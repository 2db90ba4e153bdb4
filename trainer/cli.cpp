#include "trainer/cli.h"

#include <CLI/CLI.hpp>

#include <iostream>

#include "launch/runtime.h"
#include "trainer/model_info.h"
#include "trainer/version_report.h"

namespace mlagpt::trainer {

int run_cli(int argc, char** argv, const launch::Runtime& runtime) {
  CLI::App app{"mlagpt: train GPT models with Multi-head Latent Attention on CPUs and GPUs", "mlagpt"};
  app.set_version_flag("--version", [] { return version_report(); }, "Print the versions built with and run with");
  app.require_subcommand(1);

  CLI::App* version = app.add_subcommand("version", "Print the versions built with and run with");
  version->callback([&runtime] {
    if (runtime.info().rank == 0) {
      std::cout << version_report() << std::flush;
    }
  });

  CLI::App* model_info =
      app.add_subcommand("model-info", "Print parameter counts, KV-cache size and training FLOPs of a model config");
  std::string config_file;
  int64_t context = 0;
  std::string dtype = "bfloat16";
  model_info->add_option("--config", config_file, "TOML file with a [model] table")->required();
  model_info->add_option("--context", context, "Context length in tokens (default: the config's block_size)")
      ->check(CLI::PositiveNumber);
  model_info->add_option("--dtype", dtype, "KV-cache dtype")
      ->check(CLI::IsMember({"bfloat16", "float16", "float32"}))
      ->capture_default_str();
  model_info->callback([&] {
    const std::string report = model_info_report(config_file, context, dtype);
    if (runtime.info().rank == 0) {
      std::cout << report << std::flush;
    }
  });

  // CLI11 reports a mistyped command as "A subcommand is required"; name it instead.
  std::string known;
  bool is_known = false;
  for (const CLI::App* command : app.get_subcommands({})) {
    known += (known.empty() ? "" : ", ") + command->get_name();
    is_known = is_known || (argc > 1 && command->get_name() == argv[1]);
  }
  if (argc > 1 && argv[1][0] != '-' && !is_known) {
    std::cerr << "mlagpt: unknown command '" << argv[1] << "' (commands: " << known << "; see mlagpt --help)\n";
    return static_cast<int>(CLI::ExitCodes::ExtrasError);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}

}  // namespace mlagpt::trainer
