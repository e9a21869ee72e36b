#include <arpa/inet.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>

#include "netwatcher/config.hpp"

namespace netwatcher {

std::optional<AddressNet> AddressNet::parse(std::string_view text) {
  const auto slash = text.find('/');
  const std::string address(text.substr(0, slash));
  AddressNet net;
  if (inet_pton(AF_INET, address.c_str(), net.addr.data()) == 1) {
    net.family = 4;
  } else if (inet_pton(AF_INET6, address.c_str(), net.addr.data()) == 1) {
    net.family = 6;
  } else {
    return std::nullopt;
  }
  const unsigned bits = net.family == 4 ? 32 : 128;
  net.prefix = bits;
  if (slash != std::string_view::npos) {
    const std::string_view length = text.substr(slash + 1);
    unsigned prefix = 0;
    auto [end, error] = std::from_chars(length.data(), length.data() + length.size(), prefix);
    if (length.empty() || error != std::errc() || end != length.data() + length.size() ||
        prefix > bits)
      return std::nullopt;
    net.prefix = prefix;
  }
  for (unsigned bit = net.prefix; bit < bits; ++bit)
    net.addr[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
  return net;
}

bool AddressNet::contains(int address_family, const std::uint8_t* address) const noexcept {
  static constexpr std::uint8_t kMappedPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (family == 4 && address_family == 6 && std::memcmp(address, kMappedPrefix, 12) == 0) {
    address += 12;
    address_family = 4;
  }
  if (address_family != family) return false;
  const unsigned whole = prefix / 8, rest = prefix % 8;
  if (std::memcmp(address, addr.data(), whole) != 0) return false;
  if (!rest) return true;
  const auto mask = static_cast<std::uint8_t>(0xff00u >> rest);
  return (address[whole] & mask) == addr[whole];
}

std::string AddressNet::to_string() const {
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(family == 4 ? AF_INET : AF_INET6, addr.data(), text, sizeof text);
  return std::string(text) + "/" + std::to_string(prefix);
}

}  // namespace netwatcher
