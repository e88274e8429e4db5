// Views over the message bodies pgrelay reads and builders for the messages it writes.
#include "pgrelay/protocol/messages.hpp"

#include <array>
#include <cstring>

namespace pgrelay::protocol {

namespace {

// One static table per direction: which type bytes protocol 3.0 defines.
constexpr std::array<bool, 256> make_table(std::string_view types) {
  std::array<bool, 256> table{};
  for (char c : types) table[static_cast<unsigned char>(c)] = true;
  return table;
}
constexpr auto kFrontendTypes = make_table("BCdcfDEHFPpQSX");
constexpr auto kBackendTypes = make_table("RK23CdcGHWDIEVvnNAtS1sZT");

}  // namespace

std::size_t begin_message(ByteVector& out, char type) {
  out.push_back(static_cast<std::uint8_t>(type));
  const std::size_t at = out.size();
  append_u32(out, 0);
  return at;
}

void end_message(ByteVector& out, std::size_t at) {
  write_u32(out.data() + at, static_cast<std::uint32_t>(out.size() - at));
}

namespace {

/// Grows `out` by one whole message of `type` with a `body_length`-byte body and writes its
/// header; returns where the body goes. One resize per message: pgrelay builds some per
/// transaction (the deferred BEGIN, the commit-LSN query, its ParameterStatus).
std::uint8_t* append_sized(ByteVector& out, char type, std::size_t body_length) {
  const std::size_t at = out.size();
  out.resize(at + 1 + 4 + body_length);
  std::uint8_t* p = out.data() + at;
  p[0] = static_cast<std::uint8_t>(type);
  write_u32(p + 1, static_cast<std::uint32_t>(4 + body_length));
  return p + 1 + 4;
}

/// Copies `text` and a terminating NUL to `p`; returns the byte after them.
std::uint8_t* put_cstring(std::uint8_t* p, std::string_view text) {
  if (!text.empty()) std::memcpy(p, text.data(), text.size());
  p[text.size()] = 0;
  return p + text.size() + 1;
}

}  // namespace

bool is_known(FrontendType type) { return kFrontendTypes[static_cast<unsigned char>(type)]; }
bool is_known(BackendType type) { return kBackendTypes[static_cast<unsigned char>(type)]; }

bool auth_expects_response(AuthCode code) {
  switch (code) {
    case AuthCode::kCleartextPassword:
    case AuthCode::kMd5Password:
    case AuthCode::kGss:
    case AuthCode::kGssContinue:
    case AuthCode::kSspi:
    case AuthCode::kSasl:
    case AuthCode::kSaslContinue:
      return true;
    default:
      return false;
  }
}

std::optional<TransactionStatus> parse_ready_for_query(Bytes body) {
  if (body.size() != 1) return std::nullopt;
  const auto status = static_cast<TransactionStatus>(body[0]);
  if (status != TransactionStatus::kIdle && status != TransactionStatus::kInTransaction &&
      status != TransactionStatus::kFailed) {
    return std::nullopt;
  }
  return status;
}

std::optional<BackendKeyData> parse_backend_key_data(Bytes body) {
  if (body.size() != 8) return std::nullopt;
  return BackendKeyData{read_u32(body.data()), read_u32(body.data() + 4)};
}

std::optional<AuthCode> parse_authentication_code(Bytes body) {
  if (body.size() < 4) return std::nullopt;
  return static_cast<AuthCode>(read_u32(body.data()));
}

std::optional<ParameterStatus> parse_parameter_status(Bytes body) {
  ParameterStatus status;
  std::size_t pos = 0;
  if (!read_cstring(body, pos, status.name) || !read_cstring(body, pos, status.value) ||
      pos != body.size()) {
    return std::nullopt;
  }
  return status;
}

std::optional<ErrorFields> parse_error_fields(Bytes body) {
  ErrorFields fields;
  std::size_t pos = 0;
  while (pos < body.size()) {
    const auto code = static_cast<char>(body[pos++]);
    if (code == 0) return pos == body.size() ? std::optional(fields) : std::nullopt;
    std::string_view value;
    if (!read_cstring(body, pos, value)) return std::nullopt;
    switch (code) {
      case 'S':
        if (fields.severity.empty()) fields.severity = value;
        break;
      case 'V':
        fields.severity = value;
        break;
      case 'C':
        fields.sqlstate = value;
        break;
      case 'M':
        fields.message = value;
        break;
      case 'D':
        fields.detail = value;
        break;
      default:
        break;
    }
  }
  return std::nullopt;  // no terminator
}

std::optional<std::string_view> parse_query(Bytes body) {
  std::size_t pos = 0;
  std::string_view sql;
  if (!read_cstring(body, pos, sql) || pos != body.size()) return std::nullopt;
  return sql;
}

std::optional<ParseMessage> parse_parse(Bytes body) {
  ParseMessage parse;
  std::size_t pos = 0;
  if (!read_cstring(body, pos, parse.statement) || !read_cstring(body, pos, parse.query) ||
      pos + 2 > body.size()) {
    return std::nullopt;
  }
  const std::size_t types = read_u16(body.data() + pos);
  if (pos + 2 + types * 4 != body.size()) return std::nullopt;
  parse.param_types = body.subspan(pos);
  return parse;
}

std::optional<BindPrefix> parse_bind_prefix(Bytes body) {
  BindPrefix bind;
  std::size_t pos = 0;
  if (!read_cstring(body, pos, bind.portal) || !read_cstring(body, pos, bind.statement)) {
    return std::nullopt;
  }
  bind.rest = body.subspan(pos);
  return bind;
}

std::optional<TargetMessage> parse_target(Bytes body) {
  if (body.empty() || (body[0] != 'S' && body[0] != 'P')) return std::nullopt;
  TargetMessage target;
  target.kind = static_cast<char>(body[0]);
  std::size_t pos = 1;
  if (!read_cstring(body, pos, target.name) || pos != body.size()) return std::nullopt;
  return target;
}

std::optional<SaslInitialResponse> parse_sasl_initial_response(Bytes body) {
  SaslInitialResponse response;
  std::size_t pos = 0;
  if (!read_cstring(body, pos, response.mechanism) || pos + 4 > body.size()) return std::nullopt;
  const std::uint32_t length = read_u32(body.data() + pos);
  pos += 4;
  if (length == 0xffffffffU) {
    if (pos != body.size()) return std::nullopt;
    return response;
  }
  if (pos + length != body.size()) return std::nullopt;
  response.data = std::string_view(reinterpret_cast<const char*>(body.data() + pos), length);
  response.has_data = true;
  return response;
}

std::optional<std::string_view> parse_command_tag(Bytes body) { return parse_query(body); }

std::optional<std::size_t> parse_data_row(Bytes body,
                                          std::span<std::optional<std::string_view>> columns) {
  if (body.size() < 2) return std::nullopt;
  const std::size_t count = read_u16(body.data());
  std::size_t pos = 2;
  for (std::size_t i = 0; i < count; ++i) {
    if (pos + 4 > body.size()) return std::nullopt;
    const std::uint32_t length = read_u32(body.data() + pos);
    pos += 4;
    std::optional<std::string_view> value;
    if (length != 0xffffffffU) {
      if (pos + length > body.size()) return std::nullopt;
      value = std::string_view(reinterpret_cast<const char*>(body.data() + pos), length);
      pos += length;
    }
    if (i < columns.size()) columns[i] = value;
  }
  if (pos != body.size()) return std::nullopt;
  return count;
}

namespace {

/// ErrorResponse ('E') or NoticeResponse ('N') with severity, code, message and detail.
void append_fields(ByteVector& out, char type, std::string_view severity, std::string_view sqlstate,
                   std::string_view message, std::string_view detail) {
  const std::size_t at = begin_message(out, type);
  out.push_back('S');
  append_cstring(out, severity);
  out.push_back('V');
  append_cstring(out, severity);
  out.push_back('C');
  append_cstring(out, sqlstate);
  out.push_back('M');
  append_cstring(out, message);
  if (!detail.empty()) {
    out.push_back('D');
    append_cstring(out, detail);
  }
  out.push_back(0);
  end_message(out, at);
}

}  // namespace

void append_error_response(ByteVector& out, Severity severity, std::string_view sqlstate,
                           std::string_view message, std::string_view detail) {
  append_fields(out, 'E', severity == Severity::kFatal ? "FATAL" : "ERROR", sqlstate, message,
                detail);
}

void append_parameter_status(ByteVector& out, std::string_view name, std::string_view value) {
  // A login answer carries a dozen of these.
  std::uint8_t* p = append_sized(out, 'S', name.size() + 1 + value.size() + 1);
  put_cstring(put_cstring(p, name), value);
}

void append_backend_key_data(ByteVector& out, BackendKeyData key) {
  const std::size_t at = begin_message(out, 'K');
  append_u32(out, key.process_id);
  append_u32(out, key.secret_key);
  end_message(out, at);
}

void append_ready_for_query(ByteVector& out, TransactionStatus status) {
  const std::size_t at = begin_message(out, 'Z');
  out.push_back(static_cast<std::uint8_t>(status));
  end_message(out, at);
}

void append_notice(ByteVector& out, std::string_view severity, std::string_view sqlstate,
                   std::string_view message, std::string_view detail) {
  append_fields(out, 'N', severity, sqlstate, message, detail);
}

void append_query(ByteVector& out, std::string_view sql) {
  put_cstring(append_sized(out, 'Q', sql.size() + 1), sql);
}

void append_command_complete(ByteVector& out, std::string_view tag) {
  put_cstring(append_sized(out, 'C', tag.size() + 1), tag);
}

void append_parse(ByteVector& out, std::string_view statement, std::string_view query,
                  Bytes param_types) {
  const std::size_t at = begin_message(out, 'P');
  append_cstring(out, statement);
  append_cstring(out, query);
  if (param_types.empty()) {
    out.push_back(0);
    out.push_back(0);
  } else {
    out.insert(out.end(), param_types.begin(), param_types.end());
  }
  end_message(out, at);
}

void append_bind(ByteVector& out, std::string_view portal, std::string_view statement, Bytes rest) {
  const std::size_t at = begin_message(out, 'B');
  append_cstring(out, portal);
  append_cstring(out, statement);
  if (rest.empty()) {
    // No parameter formats, no parameters, no result formats.
    for (int i = 0; i < 6; ++i) out.push_back(0);
  } else {
    out.insert(out.end(), rest.begin(), rest.end());
  }
  end_message(out, at);
}

void append_target(ByteVector& out, char type, char kind, std::string_view name) {
  const std::size_t at = begin_message(out, type);
  out.push_back(static_cast<std::uint8_t>(kind));
  append_cstring(out, name);
  end_message(out, at);
}

void append_execute(ByteVector& out, std::string_view portal, std::uint32_t max_rows) {
  const std::size_t at = begin_message(out, 'E');
  append_cstring(out, portal);
  append_u32(out, max_rows);
  end_message(out, at);
}

void append_empty_message(ByteVector& out, char type) {
  const std::size_t at = begin_message(out, type);
  end_message(out, at);
}

void append_authentication(ByteVector& out, AuthCode code, std::string_view data) {
  const std::size_t at = begin_message(out, 'R');
  append_u32(out, static_cast<std::uint32_t>(code));
  out.insert(out.end(), data.begin(), data.end());
  end_message(out, at);
}

void append_authentication_sasl(ByteVector& out, std::span<const std::string_view> mechanisms) {
  const std::size_t at = begin_message(out, 'R');
  append_u32(out, static_cast<std::uint32_t>(AuthCode::kSasl));
  for (auto mechanism : mechanisms) append_cstring(out, mechanism);
  out.push_back(0);
  end_message(out, at);
}

void append_password(ByteVector& out, std::string_view password) {
  const std::size_t at = begin_message(out, 'p');
  append_cstring(out, password);
  end_message(out, at);
}

void append_sasl_initial_response(ByteVector& out, std::string_view mechanism,
                                  std::string_view data) {
  const std::size_t at = begin_message(out, 'p');
  append_cstring(out, mechanism);
  append_u32(out, static_cast<std::uint32_t>(data.size()));
  out.insert(out.end(), data.begin(), data.end());
  end_message(out, at);
}

void append_sasl_response(ByteVector& out, std::string_view data) {
  const std::size_t at = begin_message(out, 'p');
  out.insert(out.end(), data.begin(), data.end());
  end_message(out, at);
}

void append_terminate(ByteVector& out) {
  const std::size_t at = begin_message(out, 'X');
  end_message(out, at);
}

}  // namespace pgrelay::protocol
