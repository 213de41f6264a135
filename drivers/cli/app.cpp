#include "cli/app.h"

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "cowlab/log.h"

namespace cowlab::cli {

namespace {

std::vector<const CLI::App*> subcommands_of(const CLI::App& app) {
  return app.get_subcommands(
      [](const CLI::App* a) { return !a->get_name().empty() && !a->get_disabled(); });
}

const CLI::App* find_subcommand(const CLI::App& app, const std::string& name) {
  for (const CLI::App* s : subcommands_of(app))
    if (s->check_name(name)) return s;
  return nullptr;
}

bool has_positionals(const CLI::App& app) {
  return !app.get_options([](const CLI::Option* o) { return o->get_positional(); }).empty();
}

// An option of `app` or, through fallthrough, of one of its parents.
const CLI::Option* find_option(const CLI::App* app, const std::string& name) {
  for (; app; app = app->get_parent())
    if (const CLI::Option* o = app->get_option_no_throw(name)) return o;
  return nullptr;
}

// "cowlab vm" for the vm subcommand: the words a user typed to get there.
std::string command_path(const CLI::App& app) {
  std::string path = app.get_name();
  for (const CLI::App* p = app.get_parent(); p; p = p->get_parent())
    path = p->get_name() + " " + path;
  return path;
}

std::string names_list(const CLI::App& app) {
  std::string out;
  for (const CLI::App* s : subcommands_of(app)) out += (out.empty() ? "" : ", ") + s->get_name();
  return out;
}

std::string unknown_message(const CLI::App& at, const std::string& word) {
  std::vector<std::string> names;
  for (const CLI::App* s : subcommands_of(at)) names.push_back(s->get_name());
  std::string msg = command_path(at) + ": unknown command '" + word + "'";
  auto close = closest_names(word, names);
  if (close.size() == 1)
    msg += " \u2014 did you mean '" + close[0] + "'?";
  else if (!close.empty()) {
    msg += " \u2014 did you mean one of these?";
    for (const auto& c : close) msg += "\n  " + c;
  }
  msg +=
      "\nRun '" + command_path(at) + " --help' for the list of commands (" + names_list(at) + ").";
  return msg;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  // Damerau-Levenshtein (optimal string alignment): "buidl" is one transposition from "build".
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

}  // namespace

std::vector<std::string> closest_names(const std::string& word,
                                       const std::vector<std::string>& names) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& n : names) {
    size_t dist = edit_distance(word, n);
    bool prefix = word.size() >= 2 && n.rfind(word, 0) == 0;
    // Short words get fewer edits, or "ls" would suggest every two-letter command.
    size_t limit = word.size() <= 3 ? 1 : 2;
    if (dist <= limit || prefix) scored.push_back({prefix ? 0 : dist, n});
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](auto& a, auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (const auto& [dist, n] : scored)
    if (dist == scored.front().first) out.push_back(n);
  return out;
}

std::optional<std::string> unknown_command_error(const CLI::App& app,
                                                 const std::vector<std::string>& args) {
  const CLI::App* at = &app;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") return std::nullopt;
    if (a.size() > 1 && a[0] == '-') {
      std::string name = a.substr(0, a.find('='));
      // Short options may carry their value attached ("-j4"): only "-j" is the name.
      if (name.size() > 2 && name[1] != '-') name = name.substr(0, 2);
      const CLI::Option* o = find_option(at, name);
      if (!o) return std::nullopt;  // CLI11 reports unknown options itself
      bool attached = a.find('=') != std::string::npos || (a[1] != '-' && a.size() > 2);
      if (o->get_items_expected_max() > 0 && !attached) ++i;  // skip its value
      continue;
    }
    if (const CLI::App* sub = find_subcommand(*at, a)) {
      at = sub;
      continue;
    }
    // A word where an argument is expected is the command's business, not a command name.
    if (has_positionals(*at) || subcommands_of(*at).empty()) return std::nullopt;
    return unknown_message(*at, a);
  }
  return std::nullopt;
}

void add_global_options(CLI::App& app, CommandContext& ctx) {
  set_log_verbosity(ctx.verbosity);
  app.fallthrough();
  app.require_subcommand(0, 1);
  app.set_version_flag("--version", std::string(cowlab_version()),
                       "print the version (with its git commit) and exit");
  app.add_option("--root", ctx.root,
                 "store root directory (env COWLAB_ROOT; default /var/lib/cowlab)");
  app.add_option("--driver,-s", ctx.driver,
                 "storage driver (default: auto-select; `scenario run`: every driver); Docker's "
                 "overlay2 = overlay");
  app.add_option("--storage-opt", ctx.storage_opts, "driver option KEY=VALUE (repeatable)");
  app.add_option("--priority", ctx.priority, "comma-separated driver priority for auto-selection");
  app.add_option("--lock-timeout", ctx.lock_timeout,
                 "seconds to wait for the store lock (default: wait; after 1 s a message names the holder)");
  app.add_flag("--json", ctx.json,
               "machine-readable output (snake_case keys), before or after the command");
  app.add_flag_function(
      "-v,--verbose",
      [&ctx](int64_t n) {
        ctx.verbosity = n >= 2 ? Verbosity::kDebug : Verbosity::kVerbose;
        set_log_verbosity(ctx.verbosity);  // option callbacks run before any command's callback
      },
      "more log output (-vv: debug)");
  app.add_flag_function(
      "-q,--quiet",
      [&ctx](int64_t) {
        ctx.verbosity = Verbosity::kQuiet;
        set_log_verbosity(ctx.verbosity);
      },
      "only warnings and errors on stderr");
  app.footer(
      "Run 'cowlab help COMMAND' or 'cowlab COMMAND --help' for a command's options.\n"
      "Exit status: 0 success, 1 error, 2 usage error, 130 interrupted (commands may add their "
      "own).\n");
}

void add_help_command(CLI::App& app, CommandContext& ctx) {
  auto words = std::make_shared<std::vector<std::string>>();
  auto* help =
      app.add_subcommand("help", "show the help of cowlab or of a command (cowlab help vm run)");
  help->add_option("COMMAND", *words, "command words");
  help->callback([&app, &ctx, words] {
    const CLI::App* at = &app;
    for (const auto& w : *words) {
      const CLI::App* sub = find_subcommand(*at, w);
      if (!sub) {
        spdlog::error("{}", unknown_message(*at, w));
        ctx.status = kExitUsage;
        return;
      }
      at = sub;
    }
    // Not at->help(): on the root that prints the help of the parsed subcommand (this one).
    std::cout << at->get_formatter()->make_help(at, command_path(*at), CLI::AppFormatMode::Normal);
  });
}

int parse_and_run(CLI::App& app, CommandContext& ctx, int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  // CLI11 would call `infoo` an unexpected extra argument or say "A subcommand is required":
  // name the word and the closest command instead, as git does.
  if (auto msg = unknown_command_error(app, args)) {
    spdlog::error("{}", *msg);
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  // A command group (`cowlab`, `cowlab vm`) given without its command.
  const CLI::App* at = &app;
  while (true) {
    auto parsed = at->get_subcommands();
    if (parsed.empty()) break;
    at = parsed.front();
  }
  if (!subcommands_of(*at).empty() && !has_positionals(*at)) {
    spdlog::error("{}: a command is required ({})\nRun '{} --help' for more.", command_path(*at),
                  names_list(*at), command_path(*at));
    return kExitUsage;
  }
  return ctx.status;
}

}  // namespace cowlab::cli
