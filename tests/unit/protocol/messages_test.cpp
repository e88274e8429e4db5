// Tests the typed-message views (parse_*), the type tables (is_known) and the message builders.
#include "pgrelay/protocol/messages.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "wire_builder.hpp"

namespace pgrelay::protocol {
namespace {

using test::Wire;

Bytes span_of(const ByteVector& v) { return Bytes(v.data(), v.size()); }

// The body of one whole built message, after checking its type and length prefix.
ByteVector body_of(const ByteVector& message, char type) {
  EXPECT_GE(message.size(), 5u);
  if (message.size() < 5) return {};
  EXPECT_EQ(message[0], static_cast<std::uint8_t>(type));
  EXPECT_EQ(read_u32(message.data() + 1), message.size() - 1) << "length prefix";
  return ByteVector(message.begin() + 5, message.end());
}

// ---- ReadyForQuery ----

TEST(ParseReadyForQuery, AcceptsOnlyTheThreeStatusBytes) {
  const std::vector<std::pair<ByteVector, std::optional<TransactionStatus>>> cases = {
      {{'I'}, TransactionStatus::kIdle},
      {{'T'}, TransactionStatus::kInTransaction},
      {{'E'}, TransactionStatus::kFailed},
      {{'X'}, std::nullopt},
      {{'i'}, std::nullopt},
      {{0}, std::nullopt},
      {{0xff}, std::nullopt},
      {{}, std::nullopt},
      {{'I', 'I'}, std::nullopt},
      {{'I', 0}, std::nullopt},
  };
  for (const auto& [body, expected] : cases) {
    SCOPED_TRACE(testing::Message() << "size " << body.size());
    EXPECT_EQ(parse_ready_for_query(span_of(body)), expected);
  }
}

// ---- BackendKeyData ----

TEST(ParseBackendKeyData, ReadsBigEndianPair) {
  const ByteVector body = Wire().u32(0x01020304).u32(0xfffffffe);
  const auto key = parse_backend_key_data(span_of(body));
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->process_id, 0x01020304u);
  EXPECT_EQ(key->secret_key, 0xfffffffeu);
}

TEST(ParseBackendKeyData, RejectsWrongSizes) {
  for (std::size_t size : {0u, 4u, 7u, 9u, 12u}) {
    SCOPED_TRACE(size);
    const ByteVector body(size, 1);
    EXPECT_FALSE(parse_backend_key_data(span_of(body)).has_value());
  }
}

// ---- Authentication ----

TEST(ParseAuthenticationCode, ReadsLeadingCode) {
  const std::vector<std::pair<ByteVector, std::optional<AuthCode>>> cases = {
      {Wire().u32(0), AuthCode::kOk},
      {Wire().u32(3), AuthCode::kCleartextPassword},
      {Wire().u32(5).raw("salt"), AuthCode::kMd5Password},
      {Wire().u32(10).str("SCRAM-SHA-256").byte(0), AuthCode::kSasl},
      {Wire().u32(11).raw("r=abc,s=xyz,i=4096"), AuthCode::kSaslContinue},
      {Wire().u32(12).raw("v=signature"), AuthCode::kSaslFinal},
      {Wire().u32(0x0a000000), static_cast<AuthCode>(0x0a000000)},  // big-endian, not little
      {{}, std::nullopt},
      {{0, 0, 0}, std::nullopt},
  };
  for (const auto& [body, expected] : cases) {
    SCOPED_TRACE(testing::Message() << "size " << body.size());
    EXPECT_EQ(parse_authentication_code(span_of(body)), expected);
  }
}

TEST(AuthExpectsResponse, OnlyRequestsTheClientAnswers) {
  const std::vector<std::pair<AuthCode, bool>> cases = {
      {AuthCode::kOk, false},
      {AuthCode::kKerberosV5, false},
      {AuthCode::kCleartextPassword, true},
      {AuthCode::kMd5Password, true},
      {AuthCode::kGss, true},
      {AuthCode::kGssContinue, true},
      {AuthCode::kSspi, true},
      {AuthCode::kSasl, true},
      {AuthCode::kSaslContinue, true},
      {AuthCode::kSaslFinal, false},
      {static_cast<AuthCode>(99), false},
  };
  for (const auto& [code, expected] : cases) {
    SCOPED_TRACE(static_cast<std::uint32_t>(code));
    EXPECT_EQ(auth_expects_response(code), expected);
  }
}

TEST(AuthCodeValues, MatchTheProtocol) {
  EXPECT_EQ(static_cast<std::uint32_t>(AuthCode::kOk), 0u);
  EXPECT_EQ(static_cast<std::uint32_t>(AuthCode::kCleartextPassword), 3u);
  EXPECT_EQ(static_cast<std::uint32_t>(AuthCode::kMd5Password), 5u);
  EXPECT_EQ(static_cast<std::uint32_t>(AuthCode::kSasl), 10u);
  EXPECT_EQ(static_cast<std::uint32_t>(AuthCode::kSaslContinue), 11u);
  EXPECT_EQ(static_cast<std::uint32_t>(AuthCode::kSaslFinal), 12u);
}

// ---- ParameterStatus ----

TEST(ParseParameterStatus, ReadsNameAndValue) {
  const ByteVector body = Wire().str("server_version").str("15.4");
  const auto status = parse_parameter_status(span_of(body));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->name, "server_version");
  EXPECT_EQ(status->value, "15.4");
}

TEST(AppendParameterStatus, BuildsWhatTheParserReads) {
  ByteVector out = {'Z'};  // appends after what is there
  append_parameter_status(out, "application_name", "");
  append_parameter_status(out, "TimeZone", "Europe/Paris");
  const ByteVector want = Wire()
                              .byte('Z')
                              .byte('S')
                              .u32(4 + 17 + 1)
                              .str("application_name")
                              .str("")
                              .byte('S')
                              .u32(4 + 9 + 13)
                              .str("TimeZone")
                              .str("Europe/Paris");
  EXPECT_EQ(out, want);
  const auto status =
      parse_parameter_status(std::span<const std::uint8_t>(out).subspan(1 + 5 + 17 + 1 + 5));
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->name, "TimeZone");
  EXPECT_EQ(status->value, "Europe/Paris");
}

TEST(AppendQuery, BuildsWhatTheParserReads) {
  ByteVector out = {'Z'};  // appends after what is there
  append_query(out, "SELECT pg_catalog.pg_current_wal_insert_lsn()");
  append_query(out, "");
  append_command_complete(out, "BEGIN");
  const ByteVector want = Wire()
                              .byte('Z')
                              .byte('Q')
                              .u32(4 + 46)
                              .str("SELECT pg_catalog.pg_current_wal_insert_lsn()")
                              .byte('Q')
                              .u32(4 + 1)
                              .str("")
                              .byte('C')
                              .u32(4 + 6)
                              .str("BEGIN");
  EXPECT_EQ(out, want);
  const auto sql = parse_query(std::span<const std::uint8_t>(out).subspan(1 + 5, 46));
  ASSERT_TRUE(sql.has_value());
  EXPECT_EQ(*sql, "SELECT pg_catalog.pg_current_wal_insert_lsn()");
}

TEST(ParseParameterStatus, RejectsMalformedBodies) {
  const std::vector<std::pair<std::string_view, ByteVector>> cases = {
      {"empty", {}},
      {"name only", Wire().str("TimeZone")},
      {"unterminated value", Wire().str("TimeZone").raw("UTC")},
      {"unterminated name", Wire().raw("TimeZone")},
      {"trailing bytes", Wire().str("TimeZone").str("UTC").byte('x')},
      {"three strings", Wire().str("TimeZone").str("UTC").str("x")},
  };
  for (const auto& [name, body] : cases) {
    SCOPED_TRACE(name);
    EXPECT_FALSE(parse_parameter_status(span_of(body)).has_value());
  }
}

TEST(AppendParameterStatus, RoundTrips) {
  const std::vector<std::pair<std::string_view, std::string_view>> cases = {
      {"server_version", "15.4"}, {"TimeZone", "Europe/Paris"}, {"application_name", ""}};
  for (const auto& [name, value] : cases) {
    SCOPED_TRACE(name);
    ByteVector out;
    append_parameter_status(out, name, value);
    EXPECT_EQ(out, test::typed_message('S', Wire().str(name).str(value)));
    const ByteVector body = body_of(out, 'S');
    const auto status = parse_parameter_status(span_of(body));
    ASSERT_TRUE(status.has_value());
    EXPECT_EQ(status->name, name);
    EXPECT_EQ(status->value, value);
  }
}

// ---- ErrorResponse ----

TEST(AppendErrorResponse, ProducesExactWireBytes) {
  ByteVector out;
  append_error_response(out, Severity::kError, "08P01", "bad");
  const ByteVector expected = test::typed_message('E', Wire()
                                                           .byte('S')
                                                           .str("ERROR")
                                                           .byte('V')
                                                           .str("ERROR")
                                                           .byte('C')
                                                           .str("08P01")
                                                           .byte('M')
                                                           .str("bad")
                                                           .byte(0));
  EXPECT_EQ(out, expected);
}

TEST(AppendNotice, IsANoticeResponseWithTheGivenSeverity) {
  ByteVector out;
  append_notice(out, "WARNING", "XX000", "careful", "why");
  const ByteVector body = body_of(out, 'N');
  const auto fields = parse_error_fields(span_of(body));
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->severity, "WARNING");
  EXPECT_EQ(fields->sqlstate, "XX000");
  EXPECT_EQ(fields->message, "careful");
  EXPECT_EQ(fields->detail, "why");
}

TEST(AppendErrorResponse, RoundTripsThroughParseErrorFields) {
  struct Case {
    Severity severity;
    std::string_view sqlstate;
    std::string_view message;
    std::string_view detail;
    std::string_view expected_severity;
  };
  const std::vector<Case> cases = {
      {Severity::kError, "42P01", "relation \"t\" does not exist", "", "ERROR"},
      {Severity::kError, "08P01", "protocol violation", "unexpected message type 'x'", "ERROR"},
      {Severity::kFatal, "28000", "no pg_hba.conf entry", "", "FATAL"},
      {Severity::kFatal, "53300", "too many clients", "pool is full (100/100)", "FATAL"},
      {Severity::kError, "XX000", "", "", "ERROR"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.message);
    ByteVector out;
    append_error_response(out, c.severity, c.sqlstate, c.message, c.detail);
    const ByteVector body = body_of(out, 'E');
    const auto fields = parse_error_fields(span_of(body));
    ASSERT_TRUE(fields.has_value());
    EXPECT_EQ(fields->severity, c.expected_severity);
    EXPECT_EQ(fields->sqlstate, c.sqlstate);
    EXPECT_EQ(fields->message, c.message);
    EXPECT_EQ(fields->detail, c.detail);
    // S, V, C, M, a D field only when there is a detail, and the terminator.
    EXPECT_EQ(body.size(), 1 + (1 + c.expected_severity.size() + 1) * 2 + (1 + 5 + 1) +
                               (1 + c.message.size() + 1) +
                               (c.detail.empty() ? 0 : 1 + c.detail.size() + 1));
  }
}

TEST(AppendErrorResponse, AppendsAfterExistingBytes) {
  ByteVector out = {0xaa, 0xbb};
  append_error_response(out, Severity::kFatal, "57P01", "terminating connection");
  ASSERT_GE(out.size(), 2u);
  EXPECT_EQ(out[0], 0xaa);
  EXPECT_EQ(out[1], 0xbb);
  const ByteVector body = body_of(ByteVector(out.begin() + 2, out.end()), 'E');
  const auto fields = parse_error_fields(span_of(body));  // views into `body`
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->severity, "FATAL");
  EXPECT_EQ(fields->sqlstate, "57P01");
}

TEST(ParseErrorFields, PrefersNonLocalisedSeverity) {
  struct Case {
    std::string_view name;
    ByteVector body;
    std::string_view severity;
  };
  const std::vector<Case> cases = {
      {"S then V", Wire().byte('S').str("ERREUR").byte('V').str("ERROR").byte(0), "ERROR"},
      {"V then S", Wire().byte('V').str("FATAL").byte('S').str("FATAL localisé").byte(0), "FATAL"},
      {"S only", Wire().byte('S').str("NOTICE").byte(0), "NOTICE"},
      {"V only", Wire().byte('V').str("WARNING").byte(0), "WARNING"},
      {"neither", Wire().byte('M').str("hello").byte(0), ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto fields = parse_error_fields(span_of(c.body));
    ASSERT_TRUE(fields.has_value());
    EXPECT_EQ(fields->severity, c.severity);
  }
}

TEST(ParseErrorFields, IgnoresOtherFieldsAndKeepsKnownOnes) {
  const ByteVector body = Wire()
                              .byte('S')
                              .str("ERROR")
                              .byte('C')
                              .str("22012")
                              .byte('H')
                              .str("a hint")
                              .byte('M')
                              .str("division by zero")
                              .byte('P')
                              .str("8")
                              .byte('D')
                              .str("details")
                              .byte('F')
                              .str("int.c")
                              .byte('L')
                              .str("841")
                              .byte(0);
  const auto fields = parse_error_fields(span_of(body));
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->severity, "ERROR");
  EXPECT_EQ(fields->sqlstate, "22012");
  EXPECT_EQ(fields->message, "division by zero");
  EXPECT_EQ(fields->detail, "details");
}

TEST(ParseErrorFields, RejectsMalformedBodies) {
  const std::vector<std::pair<std::string_view, ByteVector>> cases = {
      {"empty", {}},
      {"missing terminator", Wire().byte('S').str("ERROR").byte('M').str("m")},
      {"unterminated value", Wire().byte('S').str("ERROR").byte('M').raw("m")},
      {"code without value", Wire().byte('S').str("ERROR").byte('M')},
      {"bytes after terminator", Wire().byte('S').str("ERROR").byte(0).byte('M')},
      {"two terminators", Wire().byte('S').str("ERROR").byte(0).byte(0)},
  };
  for (const auto& [name, body] : cases) {
    SCOPED_TRACE(name);
    EXPECT_FALSE(parse_error_fields(span_of(body)).has_value());
  }
}

TEST(ParseErrorFields, TerminatorOnlyIsEmpty) {
  const ByteVector body = {0};
  const auto fields = parse_error_fields(span_of(body));
  ASSERT_TRUE(fields.has_value());
  EXPECT_EQ(fields->severity, "");
  EXPECT_EQ(fields->sqlstate, "");
  EXPECT_EQ(fields->message, "");
  EXPECT_EQ(fields->detail, "");
}

// ---- Query and Parse ----

TEST(ParseQuery, ReadsTerminatedText) {
  const std::vector<std::pair<ByteVector, std::optional<std::string_view>>> cases = {
      {Wire().str("SELECT 1"), "SELECT 1"},
      {Wire().str(""), ""},
      {Wire().str("BEGIN; SELECT 1; COMMIT"), "BEGIN; SELECT 1; COMMIT"},
      {{}, std::nullopt},
      {Wire().raw("SELECT 1"), std::nullopt},
      {Wire().str("SELECT 1").raw("x"), std::nullopt},
      {Wire().str("SELECT 1").str("SELECT 2"), std::nullopt},
  };
  for (const auto& [body, expected] : cases) {
    SCOPED_TRACE(testing::Message() << "size " << body.size());
    EXPECT_EQ(parse_query(span_of(body)), expected);
  }
}

TEST(ParseParse, ReadsStatementAndQuery) {
  struct Case {
    std::string_view name;
    ByteVector body;
    std::string_view statement;
    std::string_view query;
  };
  const std::vector<Case> cases = {
      {"no parameter types", Wire().str("s1").str("SELECT 1").u16(0), "s1", "SELECT 1"},
      {"two parameter types", Wire().str("s2").str("SELECT $1, $2").u16(2).u32(23).u32(25), "s2",
       "SELECT $1, $2"},
      {"unnamed statement", Wire().str("").str("SELECT $1").u16(1).u32(0), "", "SELECT $1"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto parse = parse_parse(span_of(c.body));
    ASSERT_TRUE(parse.has_value());
    EXPECT_EQ(parse->statement, c.statement);
    EXPECT_EQ(parse->query, c.query);
  }
}

TEST(ParseParse, RejectsMalformedBodies) {
  const std::vector<std::pair<std::string_view, ByteVector>> cases = {
      {"empty", {}},
      {"statement only", Wire().str("s1")},
      {"missing count", Wire().str("s1").str("SELECT 1")},
      {"one count byte", Wire().str("s1").str("SELECT 1").byte(0)},
      {"count 2 with one type", Wire().str("s1").str("SELECT $1").u16(2).u32(23)},
      {"count 1 with two types", Wire().str("s1").str("SELECT $1").u16(1).u32(23).u32(25)},
      {"count 0 with a type", Wire().str("s1").str("SELECT 1").u16(0).u32(23)},
      {"partial type", Wire().str("s1").str("SELECT $1").u16(1).u16(23)},
      {"count 65535 and nothing", Wire().str("s1").str("SELECT 1").u16(0xffff)},
      {"unterminated query", Wire().str("s1").raw("SELECT 1")},
  };
  for (const auto& [name, body] : cases) {
    SCOPED_TRACE(name);
    EXPECT_FALSE(parse_parse(span_of(body)).has_value());
  }
}

// ---- type tables ----

TEST(IsKnown, SpotChecks) {
  EXPECT_TRUE(is_known(static_cast<FrontendType>('Q')));
  EXPECT_FALSE(is_known(static_cast<FrontendType>('Z')));
  EXPECT_TRUE(is_known(static_cast<BackendType>('Z')));
  EXPECT_FALSE(is_known(static_cast<BackendType>('Q')));
}

// Every type byte protocol 3.0 defines for each direction (protocol-message-formats.html).
constexpr std::string_view kFrontendBytes = "BCdcfDEHFPpQSX";
constexpr std::string_view kBackendBytes = "RK23CdcGHWDIEVvnNAtS1sZT";

TEST(IsKnown, EveryFrontendTypeIsKnown) {
  // BUG: FrontendType::kCopyFail ('f') is declared in messages.hpp but missing from
  // kFrontendTypes in proxy/protocol/messages.cpp ("BCdcDEHFPpQSX"), so is_known returns false
  // for CopyFail. Left failing on purpose until the table is fixed.
  const std::vector<std::pair<FrontendType, std::string_view>> cases = {
      {FrontendType::kBind, "Bind"},
      {FrontendType::kClose, "Close"},
      {FrontendType::kCopyData, "CopyData"},
      {FrontendType::kCopyDone, "CopyDone"},
      {FrontendType::kCopyFail, "CopyFail"},
      {FrontendType::kDescribe, "Describe"},
      {FrontendType::kExecute, "Execute"},
      {FrontendType::kFlush, "Flush"},
      {FrontendType::kFunctionCall, "FunctionCall"},
      {FrontendType::kParse, "Parse"},
      {FrontendType::kPassword, "Password"},
      {FrontendType::kQuery, "Query"},
      {FrontendType::kSync, "Sync"},
      {FrontendType::kTerminate, "Terminate"},
  };
  ASSERT_EQ(cases.size(), kFrontendBytes.size());
  for (const auto& [type, name] : cases) {
    SCOPED_TRACE(name);
    EXPECT_NE(kFrontendBytes.find(static_cast<char>(type)), std::string_view::npos);
    EXPECT_TRUE(is_known(type));
  }
}

TEST(IsKnown, EveryBackendTypeIsKnown) {
  const std::vector<std::pair<BackendType, std::string_view>> cases = {
      {BackendType::kAuthentication, "Authentication"},
      {BackendType::kBackendKeyData, "BackendKeyData"},
      {BackendType::kBindComplete, "BindComplete"},
      {BackendType::kCloseComplete, "CloseComplete"},
      {BackendType::kCommandComplete, "CommandComplete"},
      {BackendType::kCopyData, "CopyData"},
      {BackendType::kCopyDone, "CopyDone"},
      {BackendType::kCopyInResponse, "CopyInResponse"},
      {BackendType::kCopyOutResponse, "CopyOutResponse"},
      {BackendType::kCopyBothResponse, "CopyBothResponse"},
      {BackendType::kDataRow, "DataRow"},
      {BackendType::kEmptyQueryResponse, "EmptyQueryResponse"},
      {BackendType::kErrorResponse, "ErrorResponse"},
      {BackendType::kFunctionCallResponse, "FunctionCallResponse"},
      {BackendType::kNegotiateProtocolVersion, "NegotiateProtocolVersion"},
      {BackendType::kNoData, "NoData"},
      {BackendType::kNoticeResponse, "NoticeResponse"},
      {BackendType::kNotificationResponse, "NotificationResponse"},
      {BackendType::kParameterDescription, "ParameterDescription"},
      {BackendType::kParameterStatus, "ParameterStatus"},
      {BackendType::kParseComplete, "ParseComplete"},
      {BackendType::kPortalSuspended, "PortalSuspended"},
      {BackendType::kReadyForQuery, "ReadyForQuery"},
      {BackendType::kRowDescription, "RowDescription"},
  };
  ASSERT_EQ(cases.size(), kBackendBytes.size());
  for (const auto& [type, name] : cases) {
    SCOPED_TRACE(name);
    EXPECT_NE(kBackendBytes.find(static_cast<char>(type)), std::string_view::npos);
    EXPECT_TRUE(is_known(type));
  }
}

TEST(IsKnown, ExactlyTheProtocolBytesForEveryByteValue) {
  // Fails for 'f' (CopyFail) in the frontend direction: see EveryFrontendTypeIsKnown.
  for (int b = 0; b < 256; ++b) {
    SCOPED_TRACE(b);
    const char c = static_cast<char>(b);
    EXPECT_EQ(is_known(static_cast<FrontendType>(c)),
              kFrontendBytes.find(c) != std::string_view::npos);
    EXPECT_EQ(is_known(static_cast<BackendType>(c)),
              kBackendBytes.find(c) != std::string_view::npos);
  }
}

// ---- builders ----

TEST(AppendReadyForQuery, ProducesExactWireBytes) {
  const std::vector<std::pair<TransactionStatus, std::uint8_t>> cases = {
      {TransactionStatus::kIdle, 'I'},
      {TransactionStatus::kInTransaction, 'T'},
      {TransactionStatus::kFailed, 'E'},
  };
  for (const auto& [status, byte] : cases) {
    SCOPED_TRACE(static_cast<char>(byte));
    ByteVector out;
    append_ready_for_query(out, status);
    EXPECT_EQ(out, (ByteVector{'Z', 0, 0, 0, 5, byte}));
    EXPECT_EQ(parse_ready_for_query(span_of(body_of(out, 'Z'))), status);
  }
}

TEST(AppendBackendKeyData, ProducesExactWireBytes) {
  ByteVector out;
  append_backend_key_data(out, {0x01020304, 0xa0b0c0d0});
  EXPECT_EQ(out, (ByteVector{'K', 0, 0, 0, 12, 0x01, 0x02, 0x03, 0x04, 0xa0, 0xb0, 0xc0, 0xd0}));
  const auto key = parse_backend_key_data(span_of(body_of(out, 'K')));
  ASSERT_TRUE(key.has_value());
  EXPECT_EQ(key->process_id, 0x01020304u);
  EXPECT_EQ(key->secret_key, 0xa0b0c0d0u);
}

TEST(AppendTerminate, ProducesExactWireBytes) {
  ByteVector out;
  append_terminate(out);
  EXPECT_EQ(out, (ByteVector{'X', 0, 0, 0, 4}));
}

TEST(Builders, AppendWithoutDisturbingEarlierMessages) {
  ByteVector out;
  append_ready_for_query(out, TransactionStatus::kInTransaction);
  append_terminate(out);
  append_backend_key_data(out, {7, 8});
  const ByteVector expected = {'Z', 0, 0, 0,  5, 'T', 'X', 0, 0, 0, 4, 'K',
                               0,   0, 0, 12, 0, 0,   0,   7, 0, 0, 0, 8};
  EXPECT_EQ(out, expected);
}

}  // namespace
}  // namespace pgrelay::protocol
