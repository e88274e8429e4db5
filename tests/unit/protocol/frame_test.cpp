// Tests typed-message framing: decode_frame over a buffer and StreamScanner over chunked streams.
#include "pgrelay/protocol/frame.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "pgrelay/protocol/messages.hpp"
#include "wire_builder.hpp"

namespace pgrelay::protocol {
namespace {

using test::typed_message;
using test::Wire;

Bytes span_of(const ByteVector& v) { return Bytes(v.data(), v.size()); }

ByteVector filled(std::size_t size, std::uint8_t seed) {
  ByteVector body(size);
  for (std::size_t i = 0; i < size; ++i) body[i] = static_cast<std::uint8_t>(seed + i * 7);
  return body;
}

// ---- decode_frame ----

TEST(DecodeFrame, CompleteBackendMessage) {
  const ByteVector bytes = {'Z', 0, 0, 0, 5, 'I'};
  const BackendFrame frame = decode_frame<BackendType>(span_of(bytes), kDefaultMaxMessageLength);
  EXPECT_EQ(frame.status, FrameStatus::kComplete);
  EXPECT_EQ(frame.header.type, BackendType::kReadyForQuery);
  EXPECT_EQ(frame.header.length, 5u);
  EXPECT_EQ(frame.header.body_length(), 1u);
  EXPECT_EQ(frame.header.total_length(), 6u);
  EXPECT_TRUE(frame.error.empty());
}

TEST(DecodeFrame, CompleteFrontendMessageFollowedByMoreBytes) {
  ByteVector bytes = typed_message('Q', Wire().str("SELECT 1"));
  const std::size_t first = bytes.size();
  bytes.push_back('X');  // start of a next message
  const FrontendFrame frame = decode_frame<FrontendType>(span_of(bytes), kDefaultMaxMessageLength);
  EXPECT_EQ(frame.status, FrameStatus::kComplete);
  EXPECT_EQ(frame.header.type, FrontendType::kQuery);
  EXPECT_EQ(frame.header.length, 13u);
  EXPECT_EQ(frame.header.body_length(), 9u);
  EXPECT_EQ(frame.header.total_length(), first);
}

TEST(DecodeFrame, EmptyBodyIsComplete) {
  const ByteVector bytes = {'X', 0, 0, 0, 4};
  const FrontendFrame frame = decode_frame<FrontendType>(span_of(bytes), kDefaultMaxMessageLength);
  EXPECT_EQ(frame.status, FrameStatus::kComplete);
  EXPECT_EQ(frame.header.type, FrontendType::kTerminate);
  EXPECT_EQ(frame.header.body_length(), 0u);
  EXPECT_EQ(frame.header.total_length(), 5u);
}

TEST(DecodeFrame, NeedsMoreUntilHeaderIsComplete) {
  const ByteVector bytes = {'Z', 0, 0, 0, 5, 'I'};
  for (std::size_t size = 0; size < kHeaderLength; ++size) {
    SCOPED_TRACE(size);
    const BackendFrame frame = decode_frame<BackendType>(Bytes(bytes.data(), size), 100);
    EXPECT_EQ(frame.status, FrameStatus::kNeedMore);
    EXPECT_TRUE(frame.error.empty());
  }
}

TEST(DecodeFrame, NeedsMoreUntilBodyIsComplete) {
  const ByteVector bytes = typed_message('D', filled(40, 3));
  for (std::size_t size = kHeaderLength; size < bytes.size(); ++size) {
    SCOPED_TRACE(size);
    const BackendFrame frame = decode_frame<BackendType>(Bytes(bytes.data(), size), 1000);
    EXPECT_EQ(frame.status, FrameStatus::kNeedMore);
    // The header is already known so the caller can size its buffer.
    EXPECT_EQ(frame.header.type, BackendType::kDataRow);
    EXPECT_EQ(frame.header.length, 44u);
    EXPECT_EQ(frame.header.total_length(), bytes.size());
    EXPECT_TRUE(frame.error.empty());
  }
  EXPECT_EQ(decode_frame<BackendType>(span_of(bytes), 1000).status, FrameStatus::kComplete);
}

TEST(DecodeFrame, MalformedLengths) {
  struct Case {
    std::uint32_t length;
    std::uint32_t max_length;
    FrameStatus status;
  };
  const std::vector<Case> cases = {
      {0, kDefaultMaxMessageLength, FrameStatus::kMalformed},
      {1, kDefaultMaxMessageLength, FrameStatus::kMalformed},
      {3, kDefaultMaxMessageLength, FrameStatus::kMalformed},
      {4, kDefaultMaxMessageLength, FrameStatus::kComplete},
      {100, 100, FrameStatus::kNeedMore},
      {101, 100, FrameStatus::kMalformed},
      {0x3fffffff, kDefaultMaxMessageLength, FrameStatus::kNeedMore},
      {0x40000000, kDefaultMaxMessageLength, FrameStatus::kMalformed},
      {0xffffffff, kDefaultMaxMessageLength, FrameStatus::kMalformed},
      {0xffffffff, 0xffffffff, FrameStatus::kNeedMore},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << c.length << " max " << c.max_length);
    const ByteVector bytes = Wire().byte('D').u32(c.length);
    const BackendFrame frame = decode_frame<BackendType>(span_of(bytes), c.max_length);
    EXPECT_EQ(frame.status, c.status);
    EXPECT_EQ(frame.header.length, c.length);
    EXPECT_EQ(frame.error.empty(), c.status != FrameStatus::kMalformed) << frame.error;
  }
}

TEST(DecodeFrame, MalformedErrorsNameTheCause) {
  const ByteVector short_length = Wire().byte('Q').u32(3);
  const ByteVector too_large = Wire().byte('Q').u32(65);
  EXPECT_EQ(decode_frame<FrontendType>(span_of(short_length), 64).error, "invalid message length");
  EXPECT_EQ(decode_frame<FrontendType>(span_of(too_large), 64).error, "message too large");
  EXPECT_EQ(check_header(4, 64), "");
  EXPECT_EQ(check_header(64, 64), "");
}

TEST(DecodeFrame, ConcatenatedMessagesDecodeOneAfterAnother) {
  struct Expected {
    BackendType type;
    std::uint32_t length;
  };
  ByteVector stream;
  std::vector<Expected> expected;
  auto add = [&](char type, const ByteVector& body) {
    const ByteVector message = typed_message(type, body);
    stream.insert(stream.end(), message.begin(), message.end());
    expected.push_back(
        {static_cast<BackendType>(type), static_cast<std::uint32_t>(body.size() + 4)});
  };
  add('1', {});
  add('T', filled(30, 1));
  add('D', filled(5, 2));
  add('C', Wire().str("SELECT 1"));
  add('Z', Wire().byte('I'));

  std::size_t pos = 0;
  for (const Expected& e : expected) {
    SCOPED_TRACE(pos);
    const BackendFrame frame =
        decode_frame<BackendType>(span_of(stream).subspan(pos), kDefaultMaxMessageLength);
    ASSERT_EQ(frame.status, FrameStatus::kComplete);
    EXPECT_EQ(frame.header.type, e.type);
    EXPECT_EQ(frame.header.length, e.length);
    pos += frame.header.total_length();
  }
  EXPECT_EQ(pos, stream.size());
  EXPECT_EQ(
      decode_frame<BackendType>(span_of(stream).subspan(pos), kDefaultMaxMessageLength).status,
      FrameStatus::kNeedMore);
}

// ---- StreamScanner ----

// What the visitor saw for one message. The peek is copied: it may point into scanner storage.
struct Seen {
  char type;
  std::uint32_t length;
  ByteVector peek;
  bool operator==(const Seen&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Seen& s) {
  os << "{'" << s.type << "', " << s.length << ", [";
  for (std::uint8_t b : s.peek) os << ' ' << static_cast<int>(b);
  return os << " ]}";
}

template <typename Type>
struct Recorder {
  std::vector<Seen>* seen;
  void operator()(const MessageStart<Type>& start) const {
    seen->push_back({static_cast<char>(start.header.type), start.header.length,
                     ByteVector(start.peek.begin(), start.peek.end())});
  }
};

// A backend stream with the offset where each message starts and where its peek ends.
struct Stream {
  ByteVector bytes;
  std::vector<Seen> expected;
  std::set<std::size_t> boundaries{0};
  std::vector<std::size_t> visible_at;  // prefix size at which each message must have been seen

  void add(const ByteVector& message) {
    // Expectations come from the bytes we put in, not from the scanner's arithmetic.
    const ByteVector body(message.begin() + 5, message.end());
    const std::size_t peek = std::min<std::size_t>(body.size(), 16);
    expected.push_back(
        {static_cast<char>(message[0]), static_cast<std::uint32_t>(body.size() + 4),
         ByteVector(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(peek))});
    visible_at.push_back(bytes.size() + kHeaderLength + peek);
    bytes.insert(bytes.end(), message.begin(), message.end());
    boundaries.insert(bytes.size());
  }
};

Stream backend_stream() {
  Stream s;
  ByteVector built;
  auto add_built = [&](auto&& append) {
    built.clear();
    append(built);
    s.add(built);
  };
  add_built([](ByteVector& out) { append_backend_key_data(out, {1234, 0xcafef00d}); });
  add_built([](ByteVector& out) { append_parameter_status(out, "server_version", "15.4"); });
  add_built([](ByteVector& out) { append_parameter_status(out, "a", ""); });
  s.add(typed_message('1', {}));  // ParseComplete: empty body
  s.add(typed_message('D', filled(1, 10)));
  s.add(typed_message('2', {}));  // BindComplete: empty body
  s.add(typed_message('D', filled(15, 20)));
  s.add(typed_message('D', filled(16, 30)));
  s.add(typed_message('D', filled(17, 40)));
  s.add(typed_message('n', {}));  // NoData
  s.add(typed_message('D', filled(300, 50)));
  add_built([](ByteVector& out) {
    append_error_response(out, Severity::kError, "42P01", "relation \"t\" does not exist",
                          "some detail");
  });
  s.add(typed_message('D', filled(3, 60)));
  add_built([](ByteVector& out) { append_ready_for_query(out, TransactionStatus::kIdle); });
  return s;
}

TEST(StreamScanner, WholeStreamInOneFeed) {
  const Stream stream = backend_stream();
  BackendScanner scanner;
  EXPECT_TRUE(scanner.at_boundary());
  std::vector<Seen> seen;
  EXPECT_EQ(scanner.feed(span_of(stream.bytes), Recorder<BackendType>{&seen}), "");
  EXPECT_EQ(seen, stream.expected);
  EXPECT_TRUE(scanner.at_boundary());
}

TEST(StreamScanner, EmptyChunkChangesNothing) {
  BackendScanner scanner;
  std::vector<Seen> seen;
  EXPECT_EQ(scanner.feed(Bytes(), Recorder<BackendType>{&seen}), "");
  EXPECT_TRUE(seen.empty());
  EXPECT_TRUE(scanner.at_boundary());
}

TEST(StreamScanner, EverySplitIntoTwoChunks) {
  const Stream stream = backend_stream();
  const Bytes all = span_of(stream.bytes);
  for (std::size_t split = 0; split <= all.size(); ++split) {
    SCOPED_TRACE(split);
    BackendScanner scanner;
    std::vector<Seen> seen;
    ASSERT_EQ(scanner.feed(all.first(split), Recorder<BackendType>{&seen}), "");
    EXPECT_EQ(scanner.at_boundary(), stream.boundaries.count(split) == 1);
    ASSERT_EQ(scanner.feed(all.subspan(split), Recorder<BackendType>{&seen}), "");
    EXPECT_EQ(seen, stream.expected);
    EXPECT_TRUE(scanner.at_boundary());
    if (testing::Test::HasFailure()) break;
  }
}

TEST(StreamScanner, ByteByByte) {
  const Stream stream = backend_stream();
  BackendScanner scanner;
  std::vector<Seen> seen;
  for (std::size_t i = 0; i < stream.bytes.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(scanner.feed(span_of(stream.bytes).subspan(i, 1), Recorder<BackendType>{&seen}), "");
    const std::size_t fed = i + 1;
    EXPECT_EQ(scanner.at_boundary(), stream.boundaries.count(fed) == 1);
    // Each message is reported as soon as its header and peek have arrived, not later.
    const auto due =
        static_cast<std::size_t>(std::count_if(stream.visible_at.begin(), stream.visible_at.end(),
                                               [&](std::size_t at) { return at <= fed; }));
    ASSERT_EQ(seen.size(), due);
  }
  EXPECT_EQ(seen, stream.expected);
  EXPECT_TRUE(scanner.at_boundary());
}

TEST(StreamScanner, RandomChunkingMatchesWholeFeed) {
  const Stream stream = backend_stream();
  const Bytes all = span_of(stream.bytes);
  std::mt19937 rng(99);
  for (int iteration = 0; iteration < 500; ++iteration) {
    SCOPED_TRACE(iteration);
    BackendScanner scanner;
    std::vector<Seen> seen;
    std::size_t pos = 0;
    while (pos < all.size()) {
      const std::size_t n = std::min<std::size_t>(rng() % 24, all.size() - pos);
      ASSERT_EQ(scanner.feed(all.subspan(pos, n), Recorder<BackendType>{&seen}), "");
      pos += n;
      EXPECT_EQ(scanner.at_boundary(), stream.boundaries.count(pos) == 1);
    }
    EXPECT_EQ(seen, stream.expected);
    if (testing::Test::HasFailure()) break;
  }
}

TEST(StreamScanner, PeekIsBodyPrefixOfAtMostSixteenBytes) {
  ASSERT_EQ(BackendScanner::kPeekLength, 16u);
  for (std::size_t body_size = 0; body_size <= 40; ++body_size) {
    SCOPED_TRACE(body_size);
    const ByteVector body = filled(body_size, static_cast<std::uint8_t>(body_size));
    const ByteVector message = typed_message('D', body);
    const ByteVector prefix(body.begin(), body.begin() + static_cast<std::ptrdiff_t>(
                                                             std::min<std::size_t>(body_size, 16)));
    const Seen expected{'D', static_cast<std::uint32_t>(body_size + 4), prefix};

    // Whole (fast path) and one byte at a time (collected across chunks).
    BackendScanner whole;
    std::vector<Seen> seen_whole;
    ASSERT_EQ(whole.feed(span_of(message), Recorder<BackendType>{&seen_whole}), "");
    EXPECT_EQ(seen_whole, std::vector<Seen>{expected});

    BackendScanner bytewise;
    std::vector<Seen> seen_bytewise;
    for (std::size_t i = 0; i < message.size(); ++i) {
      ASSERT_EQ(
          bytewise.feed(span_of(message).subspan(i, 1), Recorder<BackendType>{&seen_bytewise}), "");
    }
    EXPECT_EQ(seen_bytewise, std::vector<Seen>{expected});
    EXPECT_TRUE(bytewise.at_boundary());
  }
}

TEST(StreamScanner, FrontendMessages) {
  Stream stream;
  stream.add(typed_message('Q', Wire().str("SELECT 1")));
  stream.add(typed_message('P', Wire().str("").str("SELECT $1 + $2 FROM t").u16(0)));
  stream.add(typed_message('S', {}));
  stream.add(typed_message('X', {}));
  FrontendScanner scanner;
  std::vector<Seen> seen;
  EXPECT_EQ(scanner.feed(span_of(stream.bytes), Recorder<FrontendType>{&seen}), "");
  EXPECT_EQ(seen, stream.expected);
  EXPECT_TRUE(scanner.at_boundary());
}

TEST(StreamScanner, AtBoundaryIsFalseMidMessage) {
  const ByteVector message = typed_message('D', filled(100, 1));
  BackendScanner scanner;
  std::vector<Seen> seen;
  ASSERT_EQ(scanner.feed(span_of(message).first(3), Recorder<BackendType>{&seen}), "");
  EXPECT_FALSE(scanner.at_boundary());  // inside the header
  ASSERT_EQ(scanner.feed(span_of(message).subspan(3, 10), Recorder<BackendType>{&seen}), "");
  EXPECT_FALSE(scanner.at_boundary());  // inside the peek
  ASSERT_EQ(scanner.feed(span_of(message).subspan(13, 80), Recorder<BackendType>{&seen}), "");
  EXPECT_FALSE(scanner.at_boundary());  // inside the body
  EXPECT_EQ(seen.size(), 1u);
  ASSERT_EQ(scanner.feed(span_of(message).subspan(93), Recorder<BackendType>{&seen}), "");
  EXPECT_TRUE(scanner.at_boundary());
  EXPECT_EQ(seen.size(), 1u);
}

struct MalformedCase {
  std::string_view name;
  ByteVector bad_header;
  std::uint32_t max_length;
  std::string_view error;
};

TEST(StreamScanner, MalformedLengthMidStream) {
  ByteVector good;
  append_ready_for_query(good, TransactionStatus::kIdle);
  append_parameter_status(good, "TimeZone", "UTC");
  const std::vector<MalformedCase> cases = {
      {"length 0", Wire().byte('D').u32(0), kDefaultMaxMessageLength, "invalid message length"},
      {"length 3", Wire().byte('D').u32(3), kDefaultMaxMessageLength, "invalid message length"},
      {"length above max", Wire().byte('D').u32(65), 64, "message too large"},
      {"length above default max", Wire().byte('D').u32(0x40000000), kDefaultMaxMessageLength,
       "message too large"},
  };
  for (const MalformedCase& c : cases) {
    SCOPED_TRACE(c.name);
    ByteVector stream = good;
    stream.insert(stream.end(), c.bad_header.begin(), c.bad_header.end());
    stream.resize(stream.size() + 70, 0xab);  // whatever follows must not matter

    // Whole feed.
    {
      BackendScanner scanner(c.max_length);
      std::vector<Seen> seen;
      EXPECT_EQ(scanner.feed(span_of(stream), Recorder<BackendType>{&seen}), c.error);
      EXPECT_EQ(seen.size(), 2u);
    }
    // Byte by byte: the error comes with the last length byte and not before.
    {
      BackendScanner scanner(c.max_length);
      std::vector<Seen> seen;
      const std::size_t error_at = good.size() + kHeaderLength - 1;
      for (std::size_t i = 0; i <= error_at; ++i) {
        const std::string_view error =
            scanner.feed(span_of(stream).subspan(i, 1), Recorder<BackendType>{&seen});
        if (i < error_at) {
          ASSERT_EQ(error, "") << "at byte " << i;
        } else {
          EXPECT_EQ(error, c.error);
        }
      }
      EXPECT_EQ(seen.size(), 2u);
    }
    // Header split across two chunks at every point.
    for (std::size_t split = good.size(); split < good.size() + kHeaderLength; ++split) {
      BackendScanner scanner(c.max_length);
      std::vector<Seen> seen;
      EXPECT_EQ(scanner.feed(span_of(stream).first(split), Recorder<BackendType>{&seen}), "");
      EXPECT_EQ(scanner.feed(span_of(stream).subspan(split), Recorder<BackendType>{&seen}), c.error)
          << "split " << split;
    }
  }
}

TEST(StreamScanner, MaxLengthIsInclusive) {
  const ByteVector message = typed_message('D', filled(60, 0));  // length 64
  BackendScanner scanner(64);
  std::vector<Seen> seen;
  EXPECT_EQ(scanner.feed(span_of(message), Recorder<BackendType>{&seen}), "");
  EXPECT_EQ(seen.size(), 1u);
  EXPECT_TRUE(scanner.at_boundary());
}

// A reference walk with decode_frame: the messages whose header and peek lie in `stream`, and
// whether the stream turns out malformed.
struct Reference {
  std::vector<Seen> seen;
  bool malformed = false;
};

Reference reference_scan(Bytes stream, std::uint32_t max_length) {
  Reference ref;
  std::size_t pos = 0;
  while (pos < stream.size()) {
    const BackendFrame frame = decode_frame<BackendType>(stream.subspan(pos), max_length);
    if (frame.status == FrameStatus::kMalformed) {
      ref.malformed = true;
      break;
    }
    if (stream.size() - pos < kHeaderLength) break;
    const std::size_t peek = std::min<std::size_t>(frame.header.body_length(), 16);
    if (stream.size() - pos < kHeaderLength + peek) break;
    const auto peek_bytes = stream.subspan(pos + kHeaderLength, peek);
    ref.seen.push_back({static_cast<char>(frame.header.type), frame.header.length,
                        ByteVector(peek_bytes.begin(), peek_bytes.end())});
    pos += frame.header.total_length();
  }
  return ref;
}

TEST(StreamScannerFuzz, RandomStreamsInRandomChunksMatchReference) {
  std::mt19937 rng(4242);
  int malformed = 0;
  for (int iteration = 0; iteration < 10000; ++iteration) {
    SCOPED_TRACE(iteration);
    const std::uint32_t max_length = 4 + rng() % 64;
    ByteVector stream;
    if (rng() % 4 == 0) {
      // Pure noise.
      stream.resize(rng() % 200);
      for (auto& b : stream) b = static_cast<std::uint8_t>(rng());
    } else {
      // Plausible messages with the occasional corrupted byte.
      const int count = static_cast<int>(rng() % 8);
      for (int m = 0; m < count; ++m) {
        const ByteVector message = typed_message(
            static_cast<char>(rng()), filled(rng() % 40, static_cast<std::uint8_t>(rng())));
        stream.insert(stream.end(), message.begin(), message.end());
      }
      if (!stream.empty() && rng() % 3 == 0) {
        stream[rng() % stream.size()] = static_cast<std::uint8_t>(rng());
      }
    }
    const Reference ref = reference_scan(span_of(stream), max_length);
    malformed += ref.malformed ? 1 : 0;

    BackendScanner scanner(max_length);
    std::vector<Seen> seen;
    std::string_view error;
    std::size_t pos = 0;
    while (pos < stream.size() && error.empty()) {
      const std::size_t n = std::min<std::size_t>(1 + rng() % 30, stream.size() - pos);
      error =
          scanner.feed(span_of(stream).subspan(pos, n), [&](const MessageStart<BackendType>& s) {
            EXPECT_GE(s.header.length, 4u);
            EXPECT_LE(s.header.length, max_length);
            EXPECT_EQ(s.peek.size(), std::min<std::size_t>(s.header.length - 4, 16));
            seen.push_back({static_cast<char>(s.header.type), s.header.length,
                            ByteVector(s.peek.begin(), s.peek.end())});
          });
      pos += n;
    }
    EXPECT_EQ(!error.empty(), ref.malformed);
    EXPECT_EQ(seen, ref.seen);
    if (testing::Test::HasFailure()) break;
  }
  EXPECT_GT(malformed, 0);
  EXPECT_LT(malformed, 10000);
}

}  // namespace
}  // namespace pgrelay::protocol
