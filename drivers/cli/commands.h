// The storage commands of the cowlab CLI (info, layers, create-layer, ..., scenario check/run).
// They join the one root app built by main.cpp; see cowlab/command_line.h for the contract.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cowlab/command_line.h"
#include "cowlab/result.h"

namespace cowlab::cli {

// Adds the storage commands to `app`; the object holds what their options bind to, so it must
// live until parse_and_run() returns.
class StorageCommands {
 public:
  StorageCommands(CLI::App& app, CommandContext& ctx);
  StorageCommands(const StorageCommands&) = delete;
  StorageCommands& operator=(const StorageCommands&) = delete;

 private:
  // Prints "cowlab: <message>" and sets the exit status for the error's kind.
  void fail(const Error& e);

  CommandContext& g;
  bool info_all = false;
  std::string cl_id, cl_parent;
  bool cl_rw = false;
  std::vector<std::string> cl_opts;
  std::string il_id, il_parent, il_file;
  std::string ad_id, ad_file;
  std::string df_id, df_out;
  std::optional<std::string> df_parent;
  std::string ch_id;
  std::optional<std::string> ch_parent;
  std::string ds_id;
  std::optional<std::string> ds_parent;
  std::string mt_id;
  std::string um_id;
  std::string ex_id;
  std::string dl_id;
  std::string im_path, im_ref;
  std::vector<std::string> sc_files;
  std::vector<std::string> run_files;
  std::string run_driver = "all", run_work, run_out;
  std::string run_queue;  // scenario run --queue: scenario files handed out on request
  bool run_keep = false, run_events = false;
  unsigned run_repeat = 1, run_rerun = 0;  // scenario run --repeat / --rerun-failures
  std::string run_repeat_from = "checkpoint";  // scenario run --repeat-from: checkpoint | import
  std::string schema_table = "steps";
  std::string exp_file, exp_driver, exp_format = "sh", exp_out;
  std::string red_file, red_driver, red_out, red_work, red_profile;
  std::string red_against_driver, red_against_profile;  // scenario reduce: a difference
  unsigned red_timeout = 4 * 3600;  // scenario reduce --profile: the guest's whole run
};

// `cowlab crash ...`: power-cut testing (crash_cli.cpp, docs/crash.md).
void add_crash_commands(CLI::App& root, CommandContext& ctx);

}  // namespace cowlab::cli
