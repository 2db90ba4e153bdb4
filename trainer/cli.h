// The `mlagpt` command line: parses argv into one of the subcommands and runs it. Errors are thrown as
// mlagpt::Error; main() turns them into a log line and a non-zero exit.
#pragma once

namespace mlagpt::launch {
class Runtime;
}

namespace mlagpt::trainer {

// Returns the process exit code (0 on success, CLI11's code for usage errors).
int run_cli(int argc, char** argv, const launch::Runtime& runtime);

}  // namespace mlagpt::trainer
