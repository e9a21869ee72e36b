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

}  // namespace netwatcher
