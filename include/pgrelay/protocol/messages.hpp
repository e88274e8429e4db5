// Typed messages of protocol 3.0: the type bytes of each direction, views over the bodies pgrelay
// reads, and builders for the messages pgrelay writes itself.
// Layout: https://www.postgresql.org/docs/15/protocol-message-formats.html
#pragma once

#include <cstdint>
#include <optional>
#include <span>
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
  Bytes param_types;  ///< the Int16 count and the OIDs, as sent
};
/// Statement name and query text of an extended-protocol Parse (parameter types are skipped).
[[nodiscard]] std::optional<ParseMessage> parse_parse(Bytes body);

/// The start of a Bind: portal and statement names; `rest` is everything after them.
struct BindPrefix {
  std::string_view portal;
  std::string_view statement;
  Bytes rest;
};
[[nodiscard]] std::optional<BindPrefix> parse_bind_prefix(Bytes body);

/// Describe and Close: 'S' (prepared statement) or 'P' (portal) and the name.
struct TargetMessage {
  char kind = 'S';
  std::string_view name;
};
[[nodiscard]] std::optional<TargetMessage> parse_target(Bytes body);

/// SASLInitialResponse: the chosen mechanism and the initial client response, if any.
struct SaslInitialResponse {
  std::string_view mechanism;
  std::string_view data;
  bool has_data = false;
};
[[nodiscard]] std::optional<SaslInitialResponse> parse_sasl_initial_response(Bytes body);

/// CommandComplete's tag ("SELECT 1", "PREPARE", ...).
[[nodiscard]] std::optional<std::string_view> parse_command_tag(Bytes body);

/// DataRow: fills the first `columns.size()` values (nullopt for NULL); returns the column count.
[[nodiscard]] std::optional<std::size_t> parse_data_row(
    Bytes body, std::span<std::optional<std::string_view>> columns);

// ---- builders: each appends one whole message (type, length, body) ----

/// Starts a message: the type byte and a length placeholder; returns the length's offset.
std::size_t begin_message(ByteVector& out, char type);
/// Fills in the length of the message started at `at`.
void end_message(ByteVector& out, std::size_t at);

enum class Severity { kError, kFatal };

void append_error_response(ByteVector& out, Severity severity, std::string_view sqlstate,
                           std::string_view message, std::string_view detail = {});
void append_parameter_status(ByteVector& out, std::string_view name, std::string_view value);
void append_backend_key_data(ByteVector& out, BackendKeyData key);
void append_ready_for_query(ByteVector& out, TransactionStatus status);
/// The client's Terminate, which pgrelay sends to a server before closing it.
void append_terminate(ByteVector& out);
/// NoticeResponse with the given (non-localised) severity, e.g. "WARNING".
void append_notice(ByteVector& out, std::string_view severity, std::string_view sqlstate,
                   std::string_view message, std::string_view detail = {});
void append_query(ByteVector& out, std::string_view sql);
/// CommandComplete with `tag` ("BEGIN", "SELECT 1", ...).
void append_command_complete(ByteVector& out, std::string_view tag);
/// Parse; `param_types` is the Int16 count and OIDs as a client sent them (empty: none).
void append_parse(ByteVector& out, std::string_view statement, std::string_view query,
                  Bytes param_types = {});
/// Bind; `rest` is everything after the statement name (empty: no formats, no parameters).
void append_bind(ByteVector& out, std::string_view portal, std::string_view statement,
                 Bytes rest = {});
/// Describe ('D') or Close ('C') of a statement ('S') or portal ('P').
void append_target(ByteVector& out, char type, char kind, std::string_view name);
void append_execute(ByteVector& out, std::string_view portal, std::uint32_t max_rows = 0);
/// A message without a body: Sync 'S', Flush 'H', ParseComplete '1', BindComplete '2',
/// CloseComplete '3', NoData 'n', ...
void append_empty_message(ByteVector& out, char type);
/// Authentication request `code` followed by `data`.
void append_authentication(ByteVector& out, AuthCode code, std::string_view data = {});
/// AuthenticationSASL listing `mechanisms`.
void append_authentication_sasl(ByteVector& out, std::span<const std::string_view> mechanisms);
/// PasswordMessage with a NUL-terminated password (cleartext or md5).
void append_password(ByteVector& out, std::string_view password);
void append_sasl_initial_response(ByteVector& out, std::string_view mechanism,
                                  std::string_view data);
void append_sasl_response(ByteVector& out, std::string_view data);

}  // namespace pgrelay::protocol
