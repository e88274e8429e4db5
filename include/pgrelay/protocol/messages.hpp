// Typed messages of protocol 3.0: the type bytes of each direction, views over the bodies pgrelay
// reads, and builders for the messages pgrelay writes itself.
// Layout: https://www.postgresql.org/docs/15/protocol-message-formats.html
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "pgrelay/protocol/bytes.hpp"

namespace pgrelay::protocol {

/// Type byte of a message sent by the client.
enum class FrontendType : char {
  kBind = 'B',
  kClose = 'C',
  kCopyData = 'd',
  kCopyDone = 'c',
  kCopyFail = 'f',
  kDescribe = 'D',
  kExecute = 'E',
  kFlush = 'H',
  kFunctionCall = 'F',
  kParse = 'P',
  kPassword = 'p',  // also SASLInitialResponse, SASLResponse, GSSResponse
  kQuery = 'Q',
  kSync = 'S',
  kTerminate = 'X',
};

/// Type byte of a message sent by the server.
enum class BackendType : char {
  kAuthentication = 'R',
  kBackendKeyData = 'K',
  kBindComplete = '2',
  kCloseComplete = '3',
  kCommandComplete = 'C',
  kCopyData = 'd',
  kCopyDone = 'c',
  kCopyInResponse = 'G',
  kCopyOutResponse = 'H',
  kCopyBothResponse = 'W',
  kDataRow = 'D',
  kEmptyQueryResponse = 'I',
  kErrorResponse = 'E',
  kFunctionCallResponse = 'V',
  kNegotiateProtocolVersion = 'v',
  kNoData = 'n',
  kNoticeResponse = 'N',
  kNotificationResponse = 'A',
  kParameterDescription = 't',
  kParameterStatus = 'S',
  kParseComplete = '1',
  kPortalSuspended = 's',
  kReadyForQuery = 'Z',
  kRowDescription = 'T',
};

/// Whether a type byte names a message of that direction in protocol 3.0.
[[nodiscard]] bool is_known(FrontendType type);
[[nodiscard]] bool is_known(BackendType type);

/// Transaction status carried by ReadyForQuery.
enum class TransactionStatus : char { kIdle = 'I', kInTransaction = 'T', kFailed = 'E' };

/// Authentication request codes (the Int32 after 'R').
enum class AuthCode : std::uint32_t {
  kOk = 0,
  kKerberosV5 = 2,
  kCleartextPassword = 3,
  kMd5Password = 5,
  kGss = 7,
  kGssContinue = 8,
  kSspi = 9,
  kSasl = 10,
  kSaslContinue = 11,
  kSaslFinal = 12,
};

/// Whether the client answers this authentication request with a message of its own.
[[nodiscard]] bool auth_expects_response(AuthCode code);

// ---- views over message bodies (the bytes after type and length) ----

[[nodiscard]] std::optional<TransactionStatus> parse_ready_for_query(Bytes body);

struct BackendKeyData {
  std::uint32_t process_id = 0;
  std::uint32_t secret_key = 0;
};
[[nodiscard]] std::optional<BackendKeyData> parse_backend_key_data(Bytes body);

[[nodiscard]] std::optional<AuthCode> parse_authentication_code(Bytes body);

struct ParameterStatus {
  std::string_view name;
  std::string_view value;
};
[[nodiscard]] std::optional<ParameterStatus> parse_parameter_status(Bytes body);

/// The fields of an ErrorResponse or NoticeResponse that pgrelay logs or maps.
struct ErrorFields {
  std::string_view severity;  // 'V' (non-localised) when present, else 'S'
  std::string_view sqlstate;
  std::string_view message;
  std::string_view detail;
};
[[nodiscard]] std::optional<ErrorFields> parse_error_fields(Bytes body);

/// Query text of a simple-protocol Query.
[[nodiscard]] std::optional<std::string_view> parse_query(Bytes body);

struct ParseMessage {
  std::string_view statement;
  std::string_view query;
};
/// Statement name and query text of an extended-protocol Parse (parameter types are skipped).
[[nodiscard]] std::optional<ParseMessage> parse_parse(Bytes body);

// ---- builders: each appends one whole message (type, length, body) ----

enum class Severity { kError, kFatal };

void append_error_response(ByteVector& out, Severity severity, std::string_view sqlstate,
                           std::string_view message, std::string_view detail = {});
void append_parameter_status(ByteVector& out, std::string_view name, std::string_view value);
void append_backend_key_data(ByteVector& out, BackendKeyData key);
void append_ready_for_query(ByteVector& out, TransactionStatus status);
/// The client's Terminate, which pgrelay sends to a server before closing it.
void append_terminate(ByteVector& out);

}  // namespace pgrelay::protocol
