// Offline image import: OCI image layouts and `docker save` archives (both the legacy
// per-layer form and the OCI-based form written by Docker >= 25).  Rules from the OCI
// image-spec (image-layout.md, manifest.md, config.md) and Docker's tarexport (load.go).
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "core/archive_internal.h"
#include "cowlab/archive.h"
#include "cowlab/digest.h"
#include "cowlab/layer_store.h"
#include "cowlab/sys.h"

namespace cowlab {

namespace {

using json = nlohmann::json;

// The string at KEY of an untrusted JSON object: FALLBACK when the key is absent (or J is not an
// object), "" when it holds another type.  json::value() throws type_error for a present key of
// another type: fuzz_image found an index whose descriptor "digest" was an object, and
// import-image aborted on an uncaught exception instead of refusing the image.  "" then fails the
// caller's own check (digest syntax, media type, rootfs type, platform) with a clear message.
std::string str_field(const json& j, const char* key, const std::string& fallback = "") {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  return it->is_string() ? it->get<std::string>() : std::string();
}

const char* const kOciIndex = "application/vnd.oci.image.index.v1+json";
const char* const kDockerList = "application/vnd.docker.distribution.manifest.list.v2+json";

bool is_index_type(const std::string& mt) { return mt == kOciIndex || mt == kDockerList; }

// Lexically cleans a relative path inside an archive or layout; refuses escapes.
Result<std::string> clean_relative(const std::string& name, const std::string& what) {
  std::vector<std::string> parts;
  size_t i = 0;
  while (i <= name.size()) {
    size_t j = name.find('/', i);
    if (j == std::string::npos) j = name.size();
    std::string c = name.substr(i, j - i);
    if (c == "..") {
      if (parts.empty()) return Error::security(what + " \"" + name + "\": path escapes the image");
      parts.pop_back();
    } else if (!c.empty() && c != ".") {
      parts.push_back(c);
    }
    i = j + 1;
  }
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : "/") + p;
  return out;
}

// A directory holding the image's files (the layout itself, or a staging copy of a tar).
class ImageFiles {
 public:
  std::string dir;
  std::map<std::string, std::string> symlinks;  // legacy docker save links shared layer.tar files

  Result<std::string> resolve(const std::string& rel, const std::string& what) const {
    std::string p = COWLAB_TRY(clean_relative(rel, what));
    for (int hops = 0; hops < 16; ++hops) {
      auto it = symlinks.find(p);
      if (it == symlinks.end()) return dir + "/" + p;
      auto slash = p.find_last_of('/');
      std::string base = slash == std::string::npos ? "" : p.substr(0, slash + 1);
      p = COWLAB_TRY(clean_relative(it->second[0] == '/' ? it->second.substr(1) : base + it->second, what));
    }
    return Error::invalid(what + " \"" + rel + "\": too many symlinks");
  }
  bool has(const std::string& rel) const {
    auto p = resolve(rel, "file");
    return p.ok() && sys::lstat_if_exists(*p).value_or(std::nullopt).has_value();
  }
  Result<std::string> read(const std::string& rel, const std::string& what) const {
    std::string p = COWLAB_TRY(resolve(rel, what));
    auto r = sys::read_file(p);
    if (!r.ok()) return std::move(r).error().with_context(what);
    return r;
  }
};

Result<json> parse_json(const std::string& text, const std::string& what) {
  try {
    return json::parse(text);
  } catch (const std::exception& e) {
    return Error::invalid(what + ": malformed JSON: " + e.what());
  }
}

std::string blob_path(const std::string& digest) {
  auto colon = digest.find(':');
  return "blobs/" + digest.substr(0, colon) + "/" + digest.substr(colon + 1);
}

// Reads a small blob (manifest, config, index) and checks its digest and size.
Result<std::string> read_blob(const ImageFiles& files, const json& desc, const std::string& what) {
  if (!desc.is_object() || !desc.contains("digest") || !desc["digest"].is_string())
    return Error::invalid(what + ": descriptor without a digest");
  std::string digest = desc["digest"];
  if (!is_valid_digest(digest)) return Error::invalid(what + ": unsupported or malformed digest \"" + digest + "\"");
  std::string data = COWLAB_TRY(files.read(blob_path(digest), what + " blob " + digest));
  std::string actual = sha256_digest(data);
  if (actual != digest)
    return Error::corrupt(what + " blob " + digest + ": content digest is " + actual);
  if (desc.contains("size") && desc["size"].is_number_integer() && desc["size"].get<int64_t>() != static_cast<int64_t>(data.size()))
    return Error::corrupt(what + " blob " + digest + ": size " + std::to_string(data.size()) +
                          " differs from descriptor size " + std::to_string(desc["size"].get<int64_t>()));
  return data;
}

// Extracts the regular files of a docker-save tar into `dest` (inside the store's tmp/).
Result<ImageFiles> extract_archive(const std::string& tar_path, const std::string& dest) {
  ImageFiles files;
  files.dir = dest;
  COWLAB_TRY(sys::mkdir(dest, 0700));
  auto dfd = COWLAB_TRY(sys::open(dest, O_RDONLY | O_DIRECTORY));
  archive_internal::Utf8Ctype utf8;  // UTF-8 pax names (archive_internal.h)
  struct archive* a = archive_read_new();
  archive_read_support_format_tar(a);
  archive_read_support_filter_gzip(a);
  archive_read_support_filter_zstd(a);
  archive_read_support_filter_none(a);
  struct Closer {
    struct archive* a;
    ~Closer() { archive_read_free(a); }
  } closer{a};
  if (archive_read_open_filename(a, tar_path.c_str(), 1 << 20) != ARCHIVE_OK)
    return Error::invalid("image archive " + tar_path + ": " + archive_error_string(a));
  struct archive_entry* e;
  for (;;) {
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN)
      return Error::invalid("image archive " + tar_path + ": " + (archive_error_string(a) ? archive_error_string(a) : "read error"));
    const char* raw = archive_entry_pathname(e);
    std::string name = COWLAB_TRY(clean_relative(raw ? raw : "", "image archive entry"));
    if (name.empty()) continue;
    auto type = archive_entry_filetype(e);
    if (type == AE_IFDIR) {
      // Parents are created on demand below.
      continue;
    }
    if (type == AE_IFLNK) {
      files.symlinks[name] = archive_entry_symlink(e) ? archive_entry_symlink(e) : "";
      continue;
    }
    if (type != AE_IFREG) continue;  // nothing else belongs in an image archive
    // mkdir -p of the parents, never following symlinks (there are none on disk here).
    size_t pos = 0;
    while ((pos = name.find('/', pos)) != std::string::npos) {
      std::string parent = name.substr(0, pos);
      auto m = sys::mkdirat(dfd.get(), parent, 0700);
      if (!m.ok() && m.error().err() != EEXIST) return std::move(m).error().with_context("extract " + tar_path);
      ++pos;
    }
    auto fd = COWLAB_TRY(sys::openat2(dfd.get(), name, O_WRONLY | O_CREAT | O_EXCL, 0600,
                                      sys::kResolveBeneath | sys::kResolveNoSymlinks));
    const void* buf;
    size_t size;
    la_int64_t offset;
    for (;;) {
      int rr = archive_read_data_block(a, &buf, &size, &offset);
      if (rr == ARCHIVE_EOF) break;
      if (rr < ARCHIVE_WARN) return Error::invalid("image archive " + tar_path + ": entry " + name + ": " + archive_error_string(a));
      COWLAB_TRY_CTX(sys::write_all(fd.get(), buf, size), "extract " + name);
    }
  }
  return files;
}

struct LayerSource {
  std::string path;         // file holding the layer tar (possibly compressed)
  std::string blob_digest;  // expected digest of that file ("" if the format has none)
};

struct Plan {
  std::string format;
  std::string reference;
  std::vector<LayerSource> layers;
  std::vector<std::string> diff_ids;
};

Result<std::vector<std::string>> config_diff_ids(const std::string& config_text, const std::string& what) {
  json config = COWLAB_TRY(parse_json(config_text, what));
  if (!config.contains("rootfs") || !config["rootfs"].is_object())
    return Error::invalid(what + ": no rootfs section");
  const json& rootfs = config["rootfs"];
  if (str_field(rootfs, "type") != "layers")
    return Error::invalid(what + ": rootfs.type must be \"layers\"");
  if (!rootfs.contains("diff_ids") || !rootfs["diff_ids"].is_array())
    return Error::invalid(what + ": rootfs.diff_ids missing");
  std::vector<std::string> ids;
  for (const auto& d : rootfs["diff_ids"]) {
    if (!d.is_string() || !is_valid_digest(d.get<std::string>()))
      return Error::invalid(what + ": malformed diff_id " + d.dump());
    ids.push_back(d);
  }
  return ids;
}

// Collects image manifests reachable from an index (nested indexes followed).
Result<void> collect_manifests(const ImageFiles& files, const json& index, const std::string& what,
                               std::vector<json>& out, int depth) {
  if (depth > 8) return Error::invalid(what + ": indexes nested too deeply");
  if (!index.contains("manifests") || !index["manifests"].is_array())
    return Error::invalid(what + ": no manifests array");
  for (const auto& desc : index["manifests"]) {
    std::string mt = str_field(desc, "mediaType");
    if (is_index_type(mt)) {
      std::string text = COWLAB_TRY(read_blob(files, desc, what + " nested index"));
      json nested = COWLAB_TRY(parse_json(text, what + " nested index"));
      json carried = nested;
      // Tags live on the outer descriptor only (image-layout.md).
      std::vector<json> inner;
      COWLAB_TRY(collect_manifests(files, nested, what, inner, depth + 1));
      for (auto& m : inner) {
        if (desc.contains("annotations") && !m.contains("annotations")) m["annotations"] = desc["annotations"];
        out.push_back(m);
      }
    } else {
      out.push_back(desc);
    }
  }
  return {};
}

std::string desc_ref(const json& desc) {
  if (desc.contains("annotations") && desc["annotations"].is_object()) {
    const auto& a = desc["annotations"];
    if (a.contains("io.containerd.image.name") && a["io.containerd.image.name"].is_string())
      return a["io.containerd.image.name"];
    if (a.contains("org.opencontainers.image.ref.name") && a["org.opencontainers.image.ref.name"].is_string())
      return a["org.opencontainers.image.ref.name"];
  }
  return str_field(desc, "digest");
}

bool ref_matches(const json& desc, const std::string& ref) {
  if (str_field(desc, "digest") == ref) return true;
  if (!desc.contains("annotations") || !desc["annotations"].is_object()) return false;
  for (const char* key : {"io.containerd.image.name", "org.opencontainers.image.ref.name"}) {
    const auto& a = desc["annotations"];
    if (!a.contains(key) || !a[key].is_string()) continue;
    std::string v = a[key];
    if (v == ref) return true;
    if (v.size() > ref.size() && v.compare(v.size() - ref.size(), ref.size(), ref) == 0 &&
        (v[v.size() - ref.size() - 1] == ':' || v[v.size() - ref.size() - 1] == '/'))
      return true;
  }
  return false;
}

bool platform_ok(const json& desc) {
  if (!desc.contains("platform") || !desc["platform"].is_object()) return true;
  return str_field(desc["platform"], "os", "linux") == "linux" &&
         str_field(desc["platform"], "architecture", "amd64") == "amd64";
}

Result<Plan> plan_oci(const ImageFiles& files, const std::string& ref, const std::string& format) {
  const std::string what = "OCI layout " + files.dir;
  json layout = COWLAB_TRY(parse_json(COWLAB_TRY(files.read("oci-layout", what)), what + ": oci-layout"));
  if (!layout.is_object() || !layout.contains("imageLayoutVersion"))
    return Error::invalid(what + ": oci-layout has no imageLayoutVersion");
  json index = COWLAB_TRY(parse_json(COWLAB_TRY(files.read("index.json", what)), what + ": index.json"));
  std::vector<json> manifests;
  COWLAB_TRY(collect_manifests(files, index, what + ": index.json", manifests, 0));
  std::vector<json> candidates;
  for (const auto& m : manifests)
    if (platform_ok(m) && (ref.empty() || ref_matches(m, ref))) candidates.push_back(m);
  if (candidates.empty())
    return Error::not_found(what + ": no linux/amd64 image" + (ref.empty() ? "" : " matching \"" + ref + "\""));
  if (candidates.size() > 1) {
    std::string refs;
    for (const auto& c : candidates) refs += (refs.empty() ? "" : ", ") + desc_ref(c);
    return Error::invalid(what + ": several images (" + refs + "); choose one with --ref");
  }
  const json& mdesc = candidates[0];
  Plan plan;
  plan.format = format;
  plan.reference = desc_ref(mdesc);
  json manifest = COWLAB_TRY(parse_json(COWLAB_TRY(read_blob(files, mdesc, what + ": manifest")), what + ": manifest"));
  if (!manifest.contains("config") || !manifest.contains("layers") || !manifest["layers"].is_array())
    return Error::invalid(what + ": manifest " + str_field(mdesc, "digest") + " lacks config or layers");
  std::string config = COWLAB_TRY(read_blob(files, manifest["config"], what + ": config"));
  plan.diff_ids = COWLAB_TRY(config_diff_ids(config, what + ": config"));
  for (const auto& l : manifest["layers"]) {
    std::string digest = str_field(l, "digest");
    if (!is_valid_digest(digest)) return Error::invalid(what + ": layer with malformed digest \"" + digest + "\"");
    std::string mt = str_field(l, "mediaType");
    if (mt.find("foreign") != std::string::npos || mt.find("nondistributable") != std::string::npos) {
      if (!files.has(blob_path(digest)))
        return Error::not_found(what + ": non-distributable layer " + digest + " is not in the layout");
    }
    plan.layers.push_back({COWLAB_TRY(files.resolve(blob_path(digest), "layer")), digest});
  }
  return plan;
}

Result<Plan> plan_docker_legacy(const ImageFiles& files, const std::string& ref) {
  const std::string what = "docker save archive";
  json manifest = COWLAB_TRY(parse_json(COWLAB_TRY(files.read("manifest.json", what)), what + ": manifest.json"));
  if (!manifest.is_array() || manifest.empty()) return Error::invalid(what + ": manifest.json is not a non-empty array");
  std::vector<json> candidates;
  for (const auto& m : manifest) {
    if (ref.empty()) {
      candidates.push_back(m);
      continue;
    }
    if (m.contains("RepoTags") && m["RepoTags"].is_array())
      for (const auto& t : m["RepoTags"])
        if (t.is_string()) {
          std::string tag = t;
          if (tag == ref || (tag.size() > ref.size() && tag.compare(tag.size() - ref.size(), ref.size(), ref) == 0 &&
                             (tag[tag.size() - ref.size() - 1] == ':' || tag[tag.size() - ref.size() - 1] == '/')))
            candidates.push_back(m);
        }
  }
  if (candidates.empty()) return Error::not_found(what + ": no image tagged \"" + ref + "\"");
  if (candidates.size() > 1) return Error::invalid(what + ": several images; choose one with --ref");
  const json& m = candidates[0];
  if (!m.contains("Config") || !m["Config"].is_string() || !m.contains("Layers") || !m["Layers"].is_array())
    return Error::invalid(what + ": manifest.json entry lacks Config or Layers");
  Plan plan;
  plan.format = "docker-save-legacy";
  // A first tag of another type is no reference (get<std::string>() would throw, as above).
  if (m.contains("RepoTags") && m["RepoTags"].is_array() && !m["RepoTags"].empty() && m["RepoTags"][0].is_string())
    plan.reference = m["RepoTags"][0].get<std::string>();
  std::string config_name = m["Config"];
  std::string config = COWLAB_TRY(files.read(config_name, what + ": config " + config_name));
  // The config's file name is its digest ("<hex>.json" or "blobs/sha256/<hex>").
  std::string base = config_name.substr(config_name.find_last_of('/') + 1);
  if (base.size() >= 64) {
    std::string hex = base.substr(0, 64);
    if (sha256_digest(config) != "sha256:" + hex)
      return Error::corrupt(what + ": config " + config_name + " does not match its digest");
  }
  plan.diff_ids = COWLAB_TRY(config_diff_ids(config, what + ": config " + config_name));
  for (const auto& l : m["Layers"]) {
    if (!l.is_string()) return Error::invalid(what + ": Layers entry is not a string");
    std::string name = l;
    std::string expected;
    if (name.rfind("blobs/sha256/", 0) == 0) expected = "sha256:" + name.substr(13);
    plan.layers.push_back({COWLAB_TRY(files.resolve(name, "layer")), expected});
  }
  return plan;
}

Result<Plan> plan_files(const ImageFiles& files, const std::string& ref, bool from_archive) {
  Plan plan;
  if (files.has("index.json") && files.has("oci-layout")) {
    plan = COWLAB_TRY(plan_oci(files, ref, from_archive ? "docker-save-oci" : "oci-layout"));
  } else if (files.has("manifest.json")) {
    plan = COWLAB_TRY(plan_docker_legacy(files, ref));
  } else {
    return Error::invalid("neither an OCI image layout (oci-layout + index.json) nor a docker save "
                          "archive (manifest.json)");
  }
  if (plan.layers.size() != plan.diff_ids.size())
    return Error::invalid("manifest lists " + std::to_string(plan.layers.size()) + " layers but the config has " +
                          std::to_string(plan.diff_ids.size()) + " diff_ids");
  return plan;
}

}  // namespace

Result<ImagePlan> plan_image(const std::string& dir, const std::string& ref, ImageSource source) {
  ImageFiles files;
  files.dir = dir;
  Plan p = COWLAB_TRY_CTX(plan_files(files, ref, source == ImageSource::kArchive), "plan image " + dir);
  ImagePlan out;
  out.format = p.format;
  out.reference = p.reference;
  for (const auto& l : p.layers) out.layer_files.push_back(l.path);
  out.diff_ids = p.diff_ids;
  return out;
}

Result<ImportedImage> import_image(LayerStore& store, const std::string& path, const std::string& ref) {
  const std::string ctx = "import-image " + path;
  auto st = COWLAB_TRY_CTX(sys::stat(path), ctx);
  ImageFiles files;
  std::string staging;
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      if (!dir.empty()) (void)sys::remove_all(dir);
    }
  } cleanup;
  bool from_archive = !S_ISDIR(st.st_mode);
  if (from_archive) {
    staging = store.root() + "/tmp/image-" + std::to_string(::getpid()) + "-" +
              std::to_string(std::random_device{}() & 0xffffff);
    cleanup.dir = staging;
    files = COWLAB_TRY_CTX(extract_archive(path, staging), ctx);
  } else {
    files.dir = path;
  }

  Plan plan = COWLAB_TRY_CTX(plan_files(files, ref, from_archive), ctx);

  ImportedImage out;
  // Layers created by this call are removed again if a later one fails: an image imports
  // whole or not at all (layers that were already present stay).
  std::vector<std::string> created;
  struct Rollback {
    LayerStore& store;
    std::vector<std::string>& created;
    bool armed = true;
    ~Rollback() {
      if (!armed) return;
      for (auto it = created.rbegin(); it != created.rend(); ++it) (void)store.delete_layer(*it);
    }
  } rollback{store, created};
  out.source_format = plan.format;
  out.reference = plan.reference;
  std::string parent_id, parent_chain;
  for (size_t i = 0; i < plan.layers.size(); ++i) {
    const std::string& diff_id = plan.diff_ids[i];
    std::string chain = i == 0 ? diff_id : chain_id(parent_chain, diff_id);
    auto existing = COWLAB_TRY(store.find_by_chain_id(chain));
    if (existing) {
      out.layers.push_back(*existing);
      out.reused.push_back(true);
    } else {
      std::string id = chain.substr(chain.find(':') + 1);
      const LayerSource& src = plan.layers[i];
      auto fd = COWLAB_TRY_CTX(sys::open(src.path, O_RDONLY), ctx + ": layer " + std::to_string(i));
      FdReader reader(fd.get(), src.path);
      auto info = COWLAB_TRY_CTX(store.import_layer(id, parent_id, reader), ctx);
      created.push_back(id);
      std::string problem;
      if (!src.blob_digest.empty() && info.compressed_digest != src.blob_digest)
        problem = "blob " + src.blob_digest + " has digest " + info.compressed_digest;
      else if (info.diff_id != diff_id)
        problem = "layer " + std::to_string(i) + " has DiffID " + info.diff_id + ", the config says " + diff_id;
      if (!problem.empty()) return Error::corrupt(ctx + ": " + problem);
      out.layers.push_back(info);
      out.reused.push_back(false);
    }
    parent_id = out.layers.back().id;
    parent_chain = chain;
  }
  rollback.armed = false;
  return out;
}

}  // namespace cowlab
