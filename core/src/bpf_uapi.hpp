// BPF UAPI values newer than Debian 12's headers (kernel 6.4+). They are
// stable kernel ABI, so defining them here is safe on any kernel.
#pragma once

namespace netwatcher::host {

constexpr int kProgTypeNetfilter = 32;  // BPF_PROG_TYPE_NETFILTER
constexpr int kAttachNetfilter = 45;    // BPF_NETFILTER
constexpr int kBpfLinkCreate = 28;      // BPF_LINK_CREATE command

}  // namespace netwatcher::host
