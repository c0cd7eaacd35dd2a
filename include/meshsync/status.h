// Status and Result<T>: how every fallible meshsync operation reports failure.
//
// A Status is either OK or carries a code and a message. The code tells the
// caller what to do next, not just what went wrong:
//   kUnavailable         retry the same call later (a peer or file is busy).
//   kAborted             restart the enclosing operation (session cancelled,
//                        transaction lost); nothing was half-applied.
//   kFailedPrecondition  do not retry until the state is fixed by someone
//                        (replica opened with the wrong provider, schema).
//   kInvalidArgument     the input is malformed (a user's, a file's, a peer's).
//   kNotFound            the named thing does not exist.
//   kDataLoss            stored data is corrupt or unrecoverable.
//   kInternal            a bug or an unexpected library failure.
//
// Result<T> holds either a T or a non-OK Status. Both are [[nodiscard]];
// ignoring an error must be spelled out with IgnoreError(), so it can be found.
// Values of these types are thread-compatible (like any value type).
#ifndef MESHSYNC_STATUS_H_
#define MESHSYNC_STATUS_H_

#include <cassert>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace meshsync {

enum class StatusCode : int {
  kOk = 0,
  kUnavailable,
  kAborted,
  kFailedPrecondition,
  kInvalidArgument,
  kNotFound,
  kDataLoss,
  kInternal,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }

  bool ok() const { return state_ == nullptr; }
  StatusCode code() const { return ok() ? StatusCode::kOk : state_->code; }
  std::string_view message() const { return ok() ? std::string_view() : state_->message; }

  // True when the same call may succeed if retried (kUnavailable, kAborted).
  bool IsTransient() const {
    return code() == StatusCode::kUnavailable || code() == StatusCode::kAborted;
  }

  // "CODE: message", or "OK".
  std::string ToString() const;

  // Returns a copy whose message is prefixed with `context` and ": ".
  Status WithContext(std::string_view context) const;

  // Marks an error as deliberately ignored.
  void IgnoreError() const {}

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct State {
    StatusCode code;
    std::string message;
  };
  // Null when OK, so an OK Status costs one pointer and no allocation.
  std::shared_ptr<const State> state_;  // shared: Status is cheap to copy
};

Status UnavailableError(std::string message);
Status AbortedError(std::string message);
Status FailedPreconditionError(std::string message);
Status InvalidArgumentError(std::string message);
Status NotFoundError(std::string message);
Status DataLossError(std::string message);
Status InternalError(std::string message);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : data_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(data_).ok() && "Result<T> needs a value or a non-OK status");
  }

  bool ok() const { return std::holds_alternative<T>(data_); }
  explicit operator bool() const { return ok(); }

  // The error; OK when a value is held.
  Status status() const { return ok() ? Status() : std::get<Status>(data_); }

  // REQUIRES: ok().
  T& value() & { return std::get<T>(data_); }
  const T& value() const& { return std::get<T>(data_); }
  T&& value() && { return std::get<T>(std::move(data_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<Status, T> data_;
};

}  // namespace meshsync

// Returns early from the enclosing function when `expr` yields a non-OK Status.
#define MESHSYNC_RETURN_IF_ERROR(expr)                   \
  do {                                                   \
    ::meshsync::Status meshsync_status_ = (expr);        \
    if (!meshsync_status_.ok()) return meshsync_status_; \
  } while (false)

#define MESHSYNC_CONCAT_INNER_(a, b) a##b
#define MESHSYNC_CONCAT_(a, b) MESHSYNC_CONCAT_INNER_(a, b)

// `MESHSYNC_ASSIGN_OR_RETURN(auto x, MakeX());` declares x from a Result, or
// returns its error from the enclosing function.
#define MESHSYNC_ASSIGN_OR_RETURN(lhs, expr)                      \
  auto MESHSYNC_CONCAT_(meshsync_result_, __LINE__) = (expr);     \
  if (!MESHSYNC_CONCAT_(meshsync_result_, __LINE__).ok())         \
    return MESHSYNC_CONCAT_(meshsync_result_, __LINE__).status(); \
  lhs = std::move(MESHSYNC_CONCAT_(meshsync_result_, __LINE__)).value()

#endif  // MESHSYNC_STATUS_H_
