// netwatcher SDK: the error result every plugin and sink call returns.
//
// Nothing thrown inside a plugin crosses into the host: the adapters in
// plugin.hpp and sink.hpp catch every exception and return it as a failed
// Status carrying the exception's message.
#pragma once

#include <string>
#include <utility>

namespace netwatcher {

class Status {
 public:
  Status() = default;  // success
  static Status success() { return Status(); }
  // `message` should say what failed and with which input (file, key, field).
  static Status failure(std::string message) {
    Status status;
    status.failed_ = true;
    status.message_ = std::move(message);
    return status;
  }
  bool ok() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return ok(); }
  const std::string& message() const noexcept { return message_; }

 private:
  bool failed_ = false;
  std::string message_;
};

// A value, or the failed Status that says why there is none. For calls that
// produce something: `Result<Link> r = attach(...); if (!r) return r.status();`.
// Header-only (no part of the plugin ABI); moving out the value with take()
// leaves the Result holding a moved-from value.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: a value converts implicitly
  // `error` must be a failure; a success Status here is a programming error.
  Result(Status error) : status_(std::move(error)) {}  // NOLINT
  bool ok() const noexcept { return status_.ok(); }
  explicit operator bool() const noexcept { return ok(); }
  const Status& status() const noexcept { return status_; }
  // Only when ok().
  T& value() & { return value_; }
  const T& value() const& { return value_; }
  T take() { return std::move(value_); }

 private:
  T value_{};
  Status status_;
};

}  // namespace netwatcher
