// Choosing QEMU's accelerator by probing.
//
// KVM is used only if a guest really boots with it: /dev/kvm opening is not enough (on this
// project's machines it is a PVM hypervisor on which stock kernels hang or assert).  The probe
// boots the profile's kernel with the bare busybox initramfs under KVM and waits for userspace;
// anything else selects TCG.  The result is cached per host kernel and QEMU version in
// $COWLAB_CACHE/accel.json.  $COWLAB_ACCEL=tcg|kvm skips the probe.
#pragma once

#include <string>

#include "cowlab/result.h"

namespace cowlab::harness {

struct ProfileImage;

enum class AccelKind { kTcg, kKvm };

struct Accel {
  AccelKind kind = AccelKind::kTcg;
  std::string reason;  // e.g. "kvm probe: guest did not reach userspace within 20 s"
};

std::string_view accel_name(AccelKind kind);  // "tcg", "kvm"

// Probes (or reads the cached decision).  Never fails: when in doubt, TCG with the reason.
Accel choose_accel(const ProfileImage& image);

}  // namespace cowlab::harness
