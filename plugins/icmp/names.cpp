#include "names.hpp"

#include <array>
#include <string_view>
#include <utility>

namespace netwatcher::icmp {

namespace {

struct Named {
  int value;
  std::string_view name;
};

template <std::size_t N>
std::string_view find(const std::array<Named, N>& table, int value) {
  for (const auto& entry : table)
    if (entry.value == value) return entry.name;
  return {};
}

constexpr std::array<Named, 13> kIpv4Types{{
    {0, "echo_reply"},
    {3, "destination_unreachable"},
    {4, "source_quench"},
    {5, "redirect"},
    {8, "echo_request"},
    {9, "router_advertisement"},
    {10, "router_solicitation"},
    {11, "time_exceeded"},
    {12, "parameter_problem"},
    {13, "timestamp_request"},
    {14, "timestamp_reply"},
    {42, "extended_echo_request"},
    {43, "extended_echo_reply"},
}};

constexpr std::array<Named, 16> kIpv4Unreachable{{
    {0, "net_unreachable"},
    {1, "host_unreachable"},
    {2, "protocol_unreachable"},
    {3, "port_unreachable"},
    {4, "fragmentation_needed"},
    {5, "source_route_failed"},
    {6, "destination_network_unknown"},
    {7, "destination_host_unknown"},
    {8, "source_host_isolated"},
    {9, "network_prohibited"},
    {10, "host_prohibited"},
    {11, "network_unreachable_for_tos"},
    {12, "host_unreachable_for_tos"},
    {13, "administratively_prohibited"},
    {14, "host_precedence_violation"},
    {15, "precedence_cutoff"},
}};

constexpr std::array<Named, 4> kIpv4Redirect{{
    {0, "network"},
    {1, "host"},
    {2, "tos_and_network"},
    {3, "tos_and_host"},
}};

constexpr std::array<Named, 2> kTimeExceeded{{
    {0, "ttl_exceeded"},
    {1, "reassembly_timeout"},
}};

constexpr std::array<Named, 3> kIpv4ParameterProblem{{
    {0, "pointer_indicates_error"},
    {1, "missing_required_option"},
    {2, "bad_length"},
}};

constexpr std::array<Named, 17> kIpv6Types{{
    {1, "destination_unreachable"},
    {2, "packet_too_big"},
    {3, "time_exceeded"},
    {4, "parameter_problem"},
    {128, "echo_request"},
    {129, "echo_reply"},
    {130, "multicast_listener_query"},
    {131, "multicast_listener_report"},
    {132, "multicast_listener_done"},
    {133, "router_solicitation"},
    {134, "router_advertisement"},
    {135, "neighbor_solicitation"},
    {136, "neighbor_advertisement"},
    {137, "redirect"},
    {143, "multicast_listener_report_v2"},
    {160, "extended_echo_request"},
    {161, "extended_echo_reply"},
}};

constexpr std::array<Named, 8> kIpv6Unreachable{{
    {0, "no_route"},
    {1, "administratively_prohibited"},
    {2, "beyond_scope_of_source"},
    {3, "address_unreachable"},
    {4, "port_unreachable"},
    {5, "source_address_failed_policy"},
    {6, "reject_route"},
    {7, "error_in_source_routing_header"},
}};

constexpr std::array<Named, 2> kIpv6TimeExceeded{{
    {0, "hop_limit_exceeded"},
    {1, "reassembly_timeout"},
}};

constexpr std::array<Named, 3> kIpv6ParameterProblem{{
    {0, "erroneous_header_field"},
    {1, "unrecognized_next_header"},
    {2, "unrecognized_ipv6_option"},
}};

std::string_view known_code(bool ipv6, int type, int code) {
  if (!ipv6) {
    switch (type) {
      case 3:
        return find(kIpv4Unreachable, code);
      case 5:
        return find(kIpv4Redirect, code);
      case 11:
        return find(kTimeExceeded, code);
      case 12:
        return find(kIpv4ParameterProblem, code);
      default:
        return code == 0 ? "none" : "";
    }
  }
  switch (type) {
    case 1:
      return find(kIpv6Unreachable, code);
    case 3:
      return find(kIpv6TimeExceeded, code);
    case 4:
      return find(kIpv6ParameterProblem, code);
    default:
      return code == 0 ? "none" : "";
  }
}

}  // namespace

std::string type_name(bool ipv6, int type) {
  std::string_view name = ipv6 ? find(kIpv6Types, type) : find(kIpv4Types, type);
  return name.empty() ? "type_" + std::to_string(type) : std::string(name);
}

std::string code_name(bool ipv6, int type, int code) {
  std::string_view name = known_code(ipv6, type, code);
  return name.empty() ? "code_" + std::to_string(code) : std::string(name);
}

}  // namespace netwatcher::icmp
