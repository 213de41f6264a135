# cowlab — top-level entry points.  See README.md.
#   make run     the main job (installs, builds, runs)
#   make test    every test (installs, builds, tests)
SHELL := /bin/bash
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo
export CCACHE_DIR ?= $(HOME)/.cache/cowlab/ccache
# ccache keys on absolute paths unless told otherwise: with the clone as base directory and the
# working directory left out of the hash (-g puts it in by default), a second clone of the
# repository on the same machine gets cache hits instead of a full rebuild.
export CCACHE_BASEDIR ?= $(CURDIR)
export CCACHE_NOHASHDIR ?= 1

# Host packages: build, test and benchmark dependencies (flex, bison, bc, libelf-dev: kernels
# built from source, docs/kernels.md).  libzfslinux-dev comes from Debian's
# contrib component, which `vm-images/apt-sources.sh host` derives from the machine's source.
APT_PACKAGES := \
  build-essential cmake ninja-build ccache pkg-config clang-format \
  libarchive-dev libzstd-dev zlib1g-dev libssl-dev libyaml-cpp-dev nlohmann-json3-dev \
  libcli11-dev libspdlog-dev libbtrfsutil-dev libdevmapper-dev libmount-dev libxml2-dev \
  libboost-dev libboost-filesystem-dev libgtest-dev libgmock-dev \
  libzfslinux-dev \
  btrfs-progs xfsprogs e2fsprogs util-linux attr acl tar zstd gzip xz-utils cpio kmod \
  mmdebstrap debootstrap qemu-system-x86 qemu-utils busybox-static erofs-utils fdisk \
  python3 python3-pytest python3-yaml python3-jsonschema libxml2-utils chromium containers-storage umoci skopeo hyperfine dpkg-dev file strace \
  flex bison bc libelf-dev patch git \
  clang-14 libclang-rt-14-dev

DEPS_STAMP := /var/lib/cowlab/deps-$(shell cat $(MAKEFILE_LIST) vm-images/apt-sources.sh | sha256sum | cut -c1-16)

.PHONY: all deps build install test test-unit test-host test-vm test-kernels test-kbuild test-crash test-reduce-panic test-bisect vm-image run qualify demo bench clean format fuzz

all: build

deps: $(DEPS_STAMP)
$(DEPS_STAMP):
	@test "$$(id -u)" = 0 || { echo "make deps: must run as root (apt-get)"; exit 1; }
	vm-images/apt-sources.sh host
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES) \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); }
	mkdir -p $(dir $@) && touch $@

$(BUILD)/build.ninja: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_CXX_COMPILER_LAUNCHER=ccache $(CMAKE_FLAGS)

build: $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# The cowlab binary in $(PREFIX)/bin (default /usr/local/bin), where reproducer bundles'
# rerun.sh looks for it.  PREFIX=/opt/cowlab make install for elsewhere.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# -j 2: the default image build runs beside the other tests, which still run one at a time
# (the cowlab_serial lock, CMakeLists.txt).
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j 2

COWLAB := $(BUILD)/drivers/cli/cowlab
comma := ,
REPORT ?= matrix-report

# The main job: every scenario on the default kernel profile for every driver, in guests.
run: build
	$(COWLAB) vm build --profile debian-6.1
	$(COWLAB) matrix --profiles debian-6.1 --drivers all --out $(REPORT) scenarios; rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 3 ]  # 3: complete, with cells that did not pass (see the report)

# Release qualification: the same on every Debian kernel profile, the newest kernels included
# (debian-unstable and debian-trixie-backports follow the archive: resolved at build time).
QUALIFY_PROFILES ?= debian-6.1 debian-6.12 debian-5.10 debian-unstable debian-trixie-backports
qualify: build
	for p in $(QUALIFY_PROFILES); do $(COWLAB) vm build --profile $$p || exit 1; done
	$(COWLAB) matrix --profiles $(subst $(eval) ,$(comma),$(strip $(QUALIFY_PROFILES))) --drivers all --out $(REPORT) scenarios; rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 3 ]

# Guest images of the default kernel profile (cached in $${COWLAB_CACHE:-~/.cache/cowlab}).
vm-image: build
	$(COWLAB) vm build --profile debian-6.1

# The VM tests alone (default profile), and on all three Debian kernel profiles.
test-vm: build
	ctest --test-dir $(BUILD) --output-on-failure -R '^vm-'
test-kernels: build
	for p in debian-6.1 debian-6.12 debian-5.10; do $(COWLAB) vm build --profile $$p || exit 1; done
	COWLAB_BIN=$(CURDIR)/$(COWLAB) COWLAB_VM_PROFILES=debian-6.1,debian-6.12,debian-5.10 \
	  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/vm/test_guest.py tests/vm/test_cache.py
	COWLAB_BIN=$(CURDIR)/$(COWLAB) COWLAB_VM_PROFILES=debian-6.1,debian-6.12,debian-5.10 \
	  /usr/bin/python3 -m pytest -q -s -rs -p no:cacheprovider tests/vm/driver_suites.py

# Kernels built from source (docs/kernels.md): debian:6.1 + a patch, booted, the claims scenarios
# for overlay, btrfs and devicemapper on it, an incremental rebuild, and the clear errors.  The
# first run fetches linux-source-6.1 and compiles the kernel (~6 min on 2 quiet cores).
test-kbuild: build
	$(COWLAB) vm build --profile debian-6.1
	COWLAB_BIN=$(CURDIR)/$(COWLAB) /usr/bin/python3 -m pytest -q -s -rs -p no:cacheprovider tests/vm/test_kernel_build.py

# Power-cut tests in guests (docs/crash.md): scenarios/crash recorded on dm-log-writes and
# checked at every flush point, per driver, plus the deliberately broken store that must fail.
test-crash: build
	$(COWLAB) vm build --profile debian-6.1
	COWLAB_BIN=$(CURDIR)/$(COWLAB) COWLAB_VM_PROFILES=debian-6.1 \
	  /usr/bin/python3 -m pytest -q -s -rs -p no:cacheprovider tests/vm/crash_test.py

# `cowlab scenario reduce --profile` of a scenario that panics the guest (issue 13): one guest
# per candidate, about ten boots (5m41s measured under TCG on a loaded 2-core machine), so
# not part of `make test`.
test-reduce-panic: build
	$(COWLAB) vm build --profile debian-6.1
	COWLAB_BIN=$(CURDIR)/$(COWLAB) COWLAB_VM_PROFILES=debian-6.1 \
	  /usr/bin/python3 -m pytest -q -s -rs -p no:cacheprovider tests/vm/test_reduce_panic.py

# The synthetic git bisection (issue 10, docs/regressions.md): a history made from Debian's
# linux-source-6.1 with one culprit and one commit that does not compile; builds kernels, so it
# is not part of `make test`.  Measured here (load ~14 from other builds): 67 min for 9 steps,
# 39 min of it building (one-file incremental builds ~3 min each), after a first full build of
# 12 min with a warm ccache.
test-bisect: build
	$(COWLAB) vm build --profile debian-6.1
	COWLAB_BIN=$(CURDIR)/$(COWLAB) /usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/regress/test_bisect_git.py

# The storage core on the host drivers with a real Debian root filesystem (no guests).
demo: build
	tests/host/demo_host_drivers.sh $(COWLAB)

bench: build
	bench/run.sh $(BUILD)

# libFuzzer targets (tests/fuzz): FUZZ_SECONDS each, clang with ASan + UBSan, built in
# $(BUILD)/fuzz (docs/fuzzing.md has the build times).  `make test` replays each target's seed
# corpus and crash reproducers through a normally built copy (ctest fuzz-replay-TARGET) and
# runs each instrumented target for 60 s in the same $(BUILD)/fuzz (ctest fuzz-TARGET).
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= fuzz_apply fuzz_decompress fuzz_image fuzz_scenario
fuzz: deps
	tests/fuzz/fuzz.sh build $(BUILD)/fuzz $(CURDIR)
	rc=0; for t in $(FUZZ_TARGETS); do tests/fuzz/fuzz.sh run $(BUILD)/fuzz $$t $(FUZZ_SECONDS) || rc=1; done; exit $$rc

format:
	find drivers harness tests bench -name '*.cpp' -o -name '*.h' | xargs clang-format -i

clean:
	rm -rf $(BUILD)
