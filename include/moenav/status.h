// Status and Expected<T>: how everything a user, a file or a client can get wrong is reported.
// Errors carry one human-readable line that says what, where and (when known) what to do.
// C++20 has no std::expected, so this is a minimal one over std::variant.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace moenav {

class Status {
 public:
  Status() = default;
  static Status error(std::string message) { return Status(std::move(message)); }
  template <typename... Args>
  static Status errorf(fmt::format_string<Args...> format, Args&&... args) {
    return Status(fmt::format(format, std::forward<Args>(args)...));
  }

  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }
  // Prefixes context ("model.safetensors: ") to an error; no-op on success.
  Status with_context(const std::string& context) const {
    return ok() ? *this : Status(context + ": " + message_);
  }

 private:
  explicit Status(std::string message) : failed_(true), message_(std::move(message)) {}
  bool failed_ = false;
  std::string message_;
};

inline Status ok_status() { return Status(); }

template <typename T>
class Expected {
 public:
  Expected(T value) : state_(std::move(value)) {}  // NOLINT: implicit by design
  Expected(Status status) : state_(std::move(status)) {}  // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return ok(); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(state_);
  }
  const std::string& error() const { return status().message(); }

  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace moenav

// Early return on failure. Macros only because a function cannot return from its caller.
#define MOENAV_RETURN_IF_ERROR(expr)                  \
  do {                                                \
    ::moenav::Status moenav_status_ = (expr);         \
    if (!moenav_status_.ok()) return moenav_status_;  \
  } while (0)

#define MOENAV_CONCAT_INNER(a, b) a##b
#define MOENAV_CONCAT(a, b) MOENAV_CONCAT_INNER(a, b)
#define MOENAV_ASSIGN_OR_RETURN(lhs, expr) \
  MOENAV_ASSIGN_OR_RETURN_IMPL(MOENAV_CONCAT(moenav_expected_, __LINE__), lhs, expr)
#define MOENAV_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()
