// Tests the startup packet codec: parsing, length checks, builders, replication values and fuzzing.
#include "pgrelay/protocol/startup.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "pgrelay/protocol/sqlstate.hpp"
#include "wire_builder.hpp"

namespace pgrelay::protocol {
namespace {

using test::startup_packet;
using test::Wire;

constexpr std::uint32_t version(std::uint32_t major, std::uint32_t minor) {
  return (major << 16) | minor;
}

// The request codes as spelled out on the wire (1234.5678, 1234.5679, 1234.5680).
constexpr std::array<std::uint8_t, 8> kSslRequestBytes = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
constexpr std::array<std::uint8_t, 8> kGssEncRequestBytes = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30};

Bytes span_of(const ByteVector& v) { return Bytes(v.data(), v.size()); }

// Asserts that `result` is a StartupError with `sqlstate` and a message containing `fragment`.
void expect_error(const StartupPacket& result, std::string_view sqlstate,
                  std::string_view fragment) {
  const auto* error = std::get_if<StartupError>(&result);
  ASSERT_NE(error, nullptr) << "expected StartupError, got variant index " << result.index();
  EXPECT_EQ(error->sqlstate, sqlstate) << error->message;
  EXPECT_NE(error->message.find(fragment), std::string::npos)
      << "message \"" << error->message << "\" lacks \"" << fragment << "\"";
}

TEST(StartupConstants, MatchTheProtocolDocumentation) {
  EXPECT_EQ(kProtocolVersion30, version(3, 0));
  EXPECT_EQ(kCancelRequestCode, version(1234, 5678));
  EXPECT_EQ(kSslRequestCode, version(1234, 5679));
  EXPECT_EQ(kGssEncRequestCode, version(1234, 5680));
  EXPECT_EQ(kMaxStartupPacketLength, 10000u);
}

TEST(BuildStartupMessage, ProducesExactWireBytes) {
  StartupMessage message;
  message.parameters = {{"user", "alice"}, {"database", "db"}};
  const ByteVector expected =
      Wire().u32(32).u32(version(3, 0)).str("user").str("alice").str("database").str("db").byte(0);
  EXPECT_EQ(build_startup_message(message), expected);
}

TEST(ParseStartupPacket, RoundTripsStartupMessageWithAllKnownParameters) {
  StartupMessage original;
  original.parameters = {
      {"user", "alice"},
      {"database", "sales"},
      {"options", "-c search_path=public -c statement_timeout=5s"},
      {"replication", "database"},
      {"application_name", "psql"},
      {"empty_value", ""},
  };
  const ByteVector packet = build_startup_message(original);
  ASSERT_GE(packet.size(), 8u);
  EXPECT_EQ(packet.back(), 0);

  const StartupPacket result = parse_startup_packet(span_of(packet));
  const auto* message = std::get_if<StartupMessage>(&result);
  ASSERT_NE(message, nullptr) << "variant index " << result.index();
  EXPECT_EQ(message->version, kProtocolVersion30);
  EXPECT_EQ(message->parameters, original.parameters);
  EXPECT_EQ(message->get("user"), "alice");
  EXPECT_EQ(message->get("database"), "sales");
  EXPECT_EQ(message->get("options"), "-c search_path=public -c statement_timeout=5s");
  EXPECT_EQ(message->get("replication"), "database");
  EXPECT_EQ(message->get("empty_value"), "");
  EXPECT_EQ(message->get("missing"), std::nullopt);
  EXPECT_EQ(message->get("USER"), std::nullopt);  // names are case-sensitive
  EXPECT_EQ(build_startup_message(*message), packet);
}

TEST(ParseStartupPacket, GetReturnsFirstOfDuplicatedParameters) {
  const ByteVector packet = startup_packet(
      version(3, 0), Wire().str("user").str("first").str("user").str("second").byte(0));
  const StartupPacket result = parse_startup_packet(span_of(packet));
  const auto* message = std::get_if<StartupMessage>(&result);
  ASSERT_NE(message, nullptr);
  ASSERT_EQ(message->parameters.size(), 2u);
  EXPECT_EQ(message->get("user"), "first");
}

TEST(ParseStartupPacket, AcceptsMinorVersionsAboveZero) {
  for (std::uint32_t minor : {1u, 2u, 0xffffu}) {
    SCOPED_TRACE(minor);
    StartupMessage original;
    original.version = version(3, minor);
    original.parameters = {{"user", "bob"}};
    const ByteVector packet = build_startup_message(original);
    const StartupPacket result = parse_startup_packet(span_of(packet));
    const auto* message = std::get_if<StartupMessage>(&result);
    ASSERT_NE(message, nullptr) << "variant index " << result.index();
    EXPECT_EQ(message->version, version(3, minor));
    EXPECT_EQ(message->get("user"), "bob");
  }
}

TEST(ParseStartupPacket, AcceptsPacketOfExactlyMaximumLength) {
  // 8 (header) + "user\0u\0" (7) + "filler\0" (7) + value + NUL + terminator = 24 + value.
  StartupMessage original;
  original.parameters = {{"user", "u"}, {"filler", std::string(10000 - 24, 'x')}};
  const ByteVector packet = build_startup_message(original);
  ASSERT_EQ(packet.size(), 10000u);
  const StartupPacket result = parse_startup_packet(span_of(packet));
  ASSERT_TRUE(std::holds_alternative<StartupMessage>(result)) << result.index();
  EXPECT_EQ(std::get<StartupMessage>(result).parameters, original.parameters);

  original.parameters[1].second.push_back('x');
  const ByteVector too_long = build_startup_message(original);
  ASSERT_EQ(too_long.size(), 10001u);
  expect_error(parse_startup_packet(span_of(too_long)), sqlstate::kProtocolViolation,
               "invalid length of startup packet");
}

TEST(ParseStartupPacket, SslRequest) {
  const StartupPacket result = parse_startup_packet(Bytes(kSslRequestBytes));
  EXPECT_TRUE(std::holds_alternative<SslRequest>(result)) << result.index();
}

TEST(ParseStartupPacket, GssEncRequest) {
  const StartupPacket result = parse_startup_packet(Bytes(kGssEncRequestBytes));
  EXPECT_TRUE(std::holds_alternative<GssEncRequest>(result)) << result.index();
}

TEST(BuildCancelRequest, ProducesExactWireBytes) {
  const std::array<std::uint8_t, 16> expected = {0,    0,    0,    16,   0x04, 0xd2, 0x16, 0x2e,
                                                 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04};
  EXPECT_EQ(build_cancel_request({0xdeadbeef, 0x01020304}), expected);
}

TEST(ParseStartupPacket, CancelRequestRoundTrips) {
  const std::vector<CancelRequest> cases = {
      {0, 0}, {1, 2}, {4242, 0x7fffffff}, {0xffffffff, 0xffffffff}, {0x80000000, 0x00ff00ff}};
  for (const CancelRequest& original : cases) {
    SCOPED_TRACE(testing::Message() << original.process_id << "/" << original.secret_key);
    const auto packet = build_cancel_request(original);
    const StartupPacket result = parse_startup_packet(Bytes(packet));
    const auto* cancel = std::get_if<CancelRequest>(&result);
    ASSERT_NE(cancel, nullptr) << "variant index " << result.index();
    EXPECT_EQ(cancel->process_id, original.process_id);
    EXPECT_EQ(cancel->secret_key, original.secret_key);
  }
}

struct ErrorCase {
  std::string_view name;
  ByteVector packet;
  std::string_view sqlstate;
  std::string_view fragment;
};

TEST(ParseStartupPacket, RejectsInvalidPackets) {
  const ByteVector user_bob = Wire().str("user").str("bob");
  const std::vector<ErrorCase> cases = {
      {"protocol 2.0", startup_packet(version(2, 0), Wire().append(user_bob).byte(0)),
       sqlstate::kFeatureNotSupported, "unsupported frontend protocol 2.0"},
      {"protocol 4.0", startup_packet(version(4, 0), Wire().append(user_bob).byte(0)),
       sqlstate::kFeatureNotSupported, "unsupported frontend protocol 4.0"},
      {"protocol 1.0", startup_packet(version(1, 0), Wire().append(user_bob).byte(0)),
       sqlstate::kFeatureNotSupported, "unsupported frontend protocol 1.0"},
      {"protocol 0.0", startup_packet(0, Wire().append(user_bob).byte(0)),
       sqlstate::kFeatureNotSupported, "unsupported frontend protocol 0.0"},
      {"protocol 2.5 keeps minor", startup_packet(version(2, 5), Wire().append(user_bob).byte(0)),
       sqlstate::kFeatureNotSupported, "unsupported frontend protocol 2.5"},
      {"missing user", startup_packet(version(3, 0), Wire().str("database").str("db").byte(0)),
       sqlstate::kInvalidAuthorizationSpecification, "user"},
      {"empty user", startup_packet(version(3, 0), Wire().str("user").str("").byte(0)),
       sqlstate::kInvalidAuthorizationSpecification, "user"},
      {"no parameters", startup_packet(version(3, 0), Wire().byte(0)),
       sqlstate::kInvalidAuthorizationSpecification, "user"},
      {"user name is case-sensitive",
       startup_packet(version(3, 0), Wire().str("USER").str("bob").byte(0)),
       sqlstate::kInvalidAuthorizationSpecification, "user"},
      {"missing final terminator", startup_packet(version(3, 0), user_bob),
       sqlstate::kProtocolViolation, "terminator"},
      {"empty body", startup_packet(version(3, 0), {}), sqlstate::kProtocolViolation, "terminator"},
      {"parameter without value",
       startup_packet(version(3, 0), Wire().append(user_bob).str("database").byte(0)),
       sqlstate::kProtocolViolation, "terminator"},
      {"unterminated parameter name",
       startup_packet(version(3, 0), Wire().append(user_bob).raw("database")),
       sqlstate::kProtocolViolation, "terminator"},
      {"unterminated value", startup_packet(version(3, 0), Wire().str("user").raw("bob")),
       sqlstate::kProtocolViolation, "terminator"},
      {"trailing garbage",
       startup_packet(version(3, 0), Wire().append(user_bob).byte(0).raw("XYZ")),
       sqlstate::kProtocolViolation, "terminator"},
      {"parameters after terminator",
       startup_packet(version(3, 0), Wire().append(user_bob).byte(0).str("x").byte(0)),
       sqlstate::kProtocolViolation, "terminator"},
      {"extra NUL after terminator",
       startup_packet(version(3, 0), Wire().append(user_bob).byte(0).byte(0)),
       sqlstate::kProtocolViolation, "terminator"},
      {"length field larger than buffer",
       Wire().u32(30).u32(version(3, 0)).append(user_bob).byte(0), sqlstate::kProtocolViolation,
       "invalid length"},
      {"length field smaller than buffer",
       Wire().u32(12).u32(version(3, 0)).append(user_bob).byte(0), sqlstate::kProtocolViolation,
       "invalid length"},
      {"length field below 8", Wire().u32(7).u32(version(3, 0)), sqlstate::kProtocolViolation,
       "invalid length"},
      {"length field zero", Wire().u32(0).u32(version(3, 0)), sqlstate::kProtocolViolation,
       "invalid length"},
      {"length field huge", Wire().u32(0xffffffff).u32(version(3, 0)), sqlstate::kProtocolViolation,
       "invalid length"},
      {"SSLRequest too long", startup_packet(kSslRequestCode, Wire().u32(0)),
       sqlstate::kProtocolViolation, "invalid length"},
      {"GSSENCRequest too long", startup_packet(kGssEncRequestCode, Wire().u32(0)),
       sqlstate::kProtocolViolation, "invalid length"},
      {"CancelRequest too short", startup_packet(kCancelRequestCode, Wire().u32(1)),
       sqlstate::kProtocolViolation, "invalid length"},
      {"CancelRequest without key", startup_packet(kCancelRequestCode, {}),
       sqlstate::kProtocolViolation, "invalid length"},
      {"CancelRequest too long", startup_packet(kCancelRequestCode, Wire().u32(1).u32(2).u32(3)),
       sqlstate::kProtocolViolation, "invalid length"},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    expect_error(parse_startup_packet(span_of(c.packet)), c.sqlstate, c.fragment);
  }
}

TEST(ParseStartupPacket, RejectsBuffersShorterThanEightBytes) {
  for (std::size_t size = 0; size < 8; ++size) {
    SCOPED_TRACE(size);
    // A prefix of an SSLRequest whose length field claims the truncated size.
    std::array<std::uint8_t, 8> bytes = kSslRequestBytes;
    bytes[3] = static_cast<std::uint8_t>(size);
    expect_error(parse_startup_packet(Bytes(bytes.data(), size)), sqlstate::kProtocolViolation,
                 "invalid length");
  }
}

TEST(CheckStartupLength, AcceptsOnlyEightToMaximum) {
  const std::vector<std::pair<std::uint32_t, bool>> cases = {
      {0, false}, {1, false},   {4, false},    {7, false},     {8, true},      {9, true},
      {16, true}, {9999, true}, {10000, true}, {10001, false}, {65536, false}, {0xffffffff, false},
  };
  for (const auto& [length, ok] : cases) {
    SCOPED_TRACE(length);
    const std::optional<StartupError> error = check_startup_length(length);
    EXPECT_EQ(!error.has_value(), ok);
    if (error) {
      EXPECT_EQ(error->sqlstate, sqlstate::kProtocolViolation);
      EXPECT_FALSE(error->message.empty());
    }
  }
}

TEST(IsReplicationValue, FollowsPostgresBooleanAndDatabaseSpelling) {
  const std::vector<std::pair<std::string_view, bool>> cases = {
      {"true", true},     {"TRUE", true},         {"True", true},      {"on", true},
      {"ON", true},       {"yes", true},          {"YeS", true},       {"1", true},
      {"database", true}, {"DATABASE", false},    {"Database", false}, {"false", false},
      {"t", true},        {"tr", true},           {"y", true},         {"ye", true},
      {"of", false},      {"o", false},           {"n", false},        {"f", false},
      {"FALSE", false},   {"off", false},         {"no", false},       {"0", false},
      {"", false},        {"replication", false}, {"2", false},        {"truee", false},
      {" true", false},   {"databases", false},
  };
  for (const auto& [value, expected] : cases) {
    SCOPED_TRACE(testing::Message() << '"' << value << '"');
    EXPECT_EQ(is_replication_value(value), expected);
  }
}

// Properties every parse result must satisfy, whatever the input.
void check_invariants(Bytes packet, const StartupPacket& result) {
  const bool length_matches = packet.size() >= 8 && read_u32(packet.data()) == packet.size();
  if (!length_matches) {
    expect_error(result, sqlstate::kProtocolViolation, "invalid length");
    return;
  }
  const ByteVector input(packet.begin(), packet.end());
  if (const auto* message = std::get_if<StartupMessage>(&result)) {
    EXPECT_EQ(message->version >> 16, 3u);
    const auto user = message->get("user");
    ASSERT_TRUE(user.has_value());
    EXPECT_FALSE(user->empty());
    // A parsed message must describe the packet completely.
    EXPECT_EQ(build_startup_message(*message), input);
  } else if (std::holds_alternative<SslRequest>(result)) {
    EXPECT_EQ(input, ByteVector(kSslRequestBytes.begin(), kSslRequestBytes.end()));
  } else if (std::holds_alternative<GssEncRequest>(result)) {
    EXPECT_EQ(input, ByteVector(kGssEncRequestBytes.begin(), kGssEncRequestBytes.end()));
  } else if (const auto* cancel = std::get_if<CancelRequest>(&result)) {
    const auto rebuilt = build_cancel_request(*cancel);
    EXPECT_EQ(input, ByteVector(rebuilt.begin(), rebuilt.end()));
  } else {
    const auto& error = std::get<StartupError>(result);
    EXPECT_TRUE(error.sqlstate == sqlstate::kProtocolViolation ||
                error.sqlstate == sqlstate::kFeatureNotSupported ||
                error.sqlstate == sqlstate::kInvalidAuthorizationSpecification)
        << error.sqlstate;
    EXPECT_FALSE(error.message.empty());
  }
}

TEST(ParseStartupPacketFuzz, RandomBytesNeverCrash) {
  std::mt19937 rng(20240611);
  constexpr std::array<std::uint32_t, 7> kCodes = {kProtocolVersion30,
                                                   version(3, 1),
                                                   kSslRequestCode,
                                                   kGssEncRequestCode,
                                                   kCancelRequestCode,
                                                   version(2, 0),
                                                   0};
  std::array<int, std::variant_size_v<StartupPacket>> seen{};
  for (int iteration = 0; iteration < 10000; ++iteration) {
    std::size_t size = 0;
    switch (rng() % 8) {
      case 0:
        size = rng() % 8;
        break;
      case 1:
        size = 8 + rng() % 9;  // around the request sizes
        break;
      case 2:
        size = 9990 + rng() % 20;  // around the maximum
        break;
      default:
        size = rng() % 64;
        break;
    }
    ByteVector packet(size);
    switch (rng() % 3) {
      case 0:  // any byte
        for (auto& b : packet) b = static_cast<std::uint8_t>(rng());
        break;
      case 1:  // a small alphabet, so that NULs and parameter boundaries are common
        for (auto& b : packet) b = static_cast<std::uint8_t>("\0\0ua"[rng() % 4]);
        break;
      default: {  // parameter-like tokens after the 8-byte header, cut to `size`
        constexpr std::array<std::string_view, 6> kTokens = {"user",     "bob",         "",
                                                             "database", "replication", "x"};
        Wire body = Wire().u32(0).u32(0);
        while (body.bytes().size() < size) body.str(kTokens[rng() % kTokens.size()]);
        packet.assign(body.bytes().begin(),
                      body.bytes().begin() + static_cast<std::ptrdiff_t>(size));
        break;
      }
    }
    if (size >= 4 && rng() % 4 != 0) write_u32(packet.data(), static_cast<std::uint32_t>(size));
    if (size >= 8 && rng() % 4 != 0) write_u32(packet.data() + 4, kCodes[rng() % kCodes.size()]);
    if (size >= 9 && rng() % 2 == 0) packet.back() = 0;

    SCOPED_TRACE(iteration);
    const StartupPacket result = parse_startup_packet(span_of(packet));
    ASSERT_LT(result.index(), seen.size());
    ++seen[result.index()];
    check_invariants(span_of(packet), result);
    if (testing::Test::HasFailure()) break;
  }
  // Each kind of outcome must have been reached, else the fuzzing is too shallow to mean much.
  EXPECT_GT(seen[0], 0) << "StartupMessage";
  EXPECT_GT(seen[1], 0) << "SslRequest";
  EXPECT_GT(seen[2], 0) << "GssEncRequest";
  EXPECT_GT(seen[3], 0) << "CancelRequest";
  EXPECT_GT(seen[4], 0) << "StartupError";
}

TEST(ParseStartupPacketFuzz, MutationsOfValidPacketNeverCrash) {
  StartupMessage original;
  original.parameters = {{"user", "alice"},
                         {"database", "sales"},
                         {"options", "-c work_mem=64MB"},
                         {"replication", "true"}};
  const ByteVector valid = build_startup_message(original);
  std::mt19937 rng(7);
  int parsed = 0;
  int rejected = 0;
  for (int iteration = 0; iteration < 10000; ++iteration) {
    ByteVector packet = valid;
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations && !packet.empty(); ++m) {
      const std::size_t at = rng() % packet.size();
      switch (rng() % 6) {
        case 0:
          packet[at] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
          break;
        case 1:
          packet[at] = 0;
          break;
        case 2:
          packet[at] = static_cast<std::uint8_t>('a' + rng() % 26);
          break;
        case 3:
          packet.erase(packet.begin() + static_cast<std::ptrdiff_t>(at));
          break;
        case 4:
          packet.insert(packet.begin() + static_cast<std::ptrdiff_t>(at),
                        static_cast<std::uint8_t>(rng() % 3 == 0 ? 0 : rng()));
          break;
        default:
          packet.resize(at);
          break;
      }
    }
    // Usually repair the length prefix so the parser gets past the length check.
    if (packet.size() >= 4 && rng() % 4 != 0) {
      write_u32(packet.data(), static_cast<std::uint32_t>(packet.size()));
    }
    SCOPED_TRACE(iteration);
    const StartupPacket result = parse_startup_packet(span_of(packet));
    (std::holds_alternative<StartupMessage>(result) ? parsed : rejected)++;
    check_invariants(span_of(packet), result);
    if (testing::Test::HasFailure()) break;
  }
  EXPECT_GT(parsed, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
}  // namespace pgrelay::protocol
