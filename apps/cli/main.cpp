// moenav: the command-line entry point. Each subcommand lives in its own file; this one only
// registers them.
#include <cstdio>

#include "cli/options.h"

int main(int argc, char** argv) {
  CLI::App app{"moenav: Mixture-of-Experts inference and its optimization design space"};
  app.require_subcommand(1);
  int exit_code = 0;
  moenav::cli::register_generate(app, exit_code);
  moenav::cli::register_perplexity(app, exit_code);
  moenav::cli::register_logits(app, exit_code);
  moenav::cli::register_bench(app, exit_code);
  moenav::cli::register_inspect(app, exit_code);
  moenav::cli::register_trace(app, exit_code);
  moenav::cli::register_convert(app, exit_code);
  moenav::cli::register_quantize(app, exit_code);
  moenav::cli::register_serve(app, exit_code);
  moenav::cli::register_tune(app, exit_code);
  moenav::cli::register_report(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  }
  return exit_code;
}
