#include "strip.h"

#include <sys/stat.h>
#include <unistd.h>

#include "cowlab/harness/profile.h"
#include "process.h"
#include "util.h"

namespace fs = std::filesystem;

namespace cowlab::harness {

namespace {
Result<void> objcopy(std::vector<std::string> args, const fs::path& log) {
  detail::SpawnOptions so;
  so.argv = {"objcopy"};
  so.argv.insert(so.argv.end(), args.begin(), args.end());
  so.output_file = log;
  auto run = COWLAB_TRY(detail::run_tool(so, std::chrono::seconds(300)));
  if (run.exit_status != 0)
    return Error(ErrorKind::kSystem, "objcopy " + args.back() + ": exit " +
                                         std::to_string(run.exit_status) + ": " + run.output_tail);
  return ok();
}
}  // namespace

Result<StrippedBinary> stripped_binary(const fs::path& binary, const fs::path& name_arg) {
  const fs::path name = name_arg.empty() ? binary : name_arg;
  struct stat st {};
  if (::stat(binary.c_str(), &st) != 0) return Error::from_errno("stat", binary.string(), errno);
  std::string key =
      detail::sha256_hex(fs::absolute(name).string() + "\n" + std::to_string(st.st_size) + "\n" +
                         std::to_string(st.st_mtim.tv_sec) + "." +
                         std::to_string(st.st_mtim.tv_nsec))
          .substr(0, 24);
  fs::path dir = cache_dir() / "payload" / key;
  StrippedBinary out{dir / name.filename(), dir / (name.filename().string() + ".debug")};
  std::error_code ec;
  if (fs::exists(out.stripped, ec) && fs::exists(out.debug, ec)) return out;
  // Built in a private directory and renamed into place: concurrent matrices never see half a file.
  fs::path tmp = cache_dir() / "payload" / (key + ".tmp." + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return Error::from_errno("mkdir", tmp.string(), ec.value());
  auto fail = [&](Error e) -> Result<StrippedBinary> {
    fs::remove_all(tmp, ec);
    return std::move(e).with_context("strip the guest's copy of " + name.string());
  };
  fs::path debug = tmp / out.debug.filename(), stripped = tmp / out.stripped.filename(),
           log = tmp / "objcopy.log";
  if (auto r = objcopy({"--only-keep-debug", binary.string(), debug.string()}, log); !r.ok())
    return fail(r.error());
  // --add-gnu-debuglink runs in tmp so the link names the file, not a path.
  if (auto r = objcopy({"--strip-debug", "--add-gnu-debuglink=" + debug.string(), binary.string(),
                        stripped.string()},
                       log);
      !r.ok())
    return fail(r.error());
  fs::remove(log, ec);
  fs::rename(tmp, dir, ec);
  if (ec && !fs::exists(out.stripped))
    return fail(Error::from_errno("rename", dir.string(), ec.value()));
  fs::remove_all(tmp, ec);  // another process won the rename
  return out;
}

}  // namespace cowlab::harness
