// ICMP (RFC 792 and successors) and ICMPv6 (RFC 4443, 4861, 2710/3810)
// message type and code names, as snake_case labels.
#pragma once

#include <string>

namespace netwatcher::icmp {

// `ipv6` selects the ICMPv6 registry. Unknown values come back as
// "type_<n>" / "code_<n>", so a label is never empty.
std::string type_name(bool ipv6, int type);
std::string code_name(bool ipv6, int type, int code);

}  // namespace netwatcher::icmp
