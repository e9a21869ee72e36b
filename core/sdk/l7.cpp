#include "netwatcher/l7.hpp"

#include <cstring>

namespace netwatcher {

std::optional<std::uint8_t> ByteReader::peek() const noexcept {
  if (empty()) return std::nullopt;
  return static_cast<std::uint8_t>(bytes_[position_]);
}

std::optional<std::uint8_t> ByteReader::u8() noexcept {
  auto value = peek();
  if (value) ++position_;
  return value;
}

std::optional<std::uint16_t> ByteReader::be16() noexcept {
  if (remaining() < 2) return std::nullopt;
  auto hi = static_cast<std::uint16_t>(bytes_[position_]);
  auto lo = static_cast<std::uint16_t>(bytes_[position_ + 1]);
  position_ += 2;
  return static_cast<std::uint16_t>(hi << 8 | lo);
}

std::optional<std::uint32_t> ByteReader::be32() noexcept {
  if (remaining() < 4) return std::nullopt;
  std::uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value = value << 8 | static_cast<std::uint8_t>(bytes_[position_ + i]);
  position_ += 4;
  return value;
}

std::optional<std::string_view> ByteReader::take(std::size_t n) noexcept {
  if (remaining() < n) return std::nullopt;
  std::string_view text(reinterpret_cast<const char*>(bytes_.data()) + position_, n);
  position_ += n;
  return text;
}

bool ByteReader::skip(std::size_t n) noexcept {
  if (remaining() < n) return false;
  position_ += n;
  return true;
}

std::optional<std::string_view> ByteReader::line(std::size_t max_length) noexcept {
  const char* start = reinterpret_cast<const char*>(bytes_.data()) + position_;
  std::size_t window = remaining() < max_length + 2 ? remaining() : max_length + 2;
  const void* newline = std::memchr(start, '\n', window);
  if (!newline) return std::nullopt;
  std::size_t length = static_cast<const char*>(newline) - start;
  std::size_t consumed = length + 1;
  if (length > 0 && start[length - 1] == '\r') --length;
  if (length > max_length) return std::nullopt;
  position_ += consumed;
  return std::string_view(start, length);
}

bool ByteReader::starts_with(std::string_view prefix) const noexcept {
  return remaining() >= prefix.size() &&
         std::memcmp(bytes_.data() + position_, prefix.data(), prefix.size()) == 0;
}

}  // namespace netwatcher
