// SCRAM-SHA-256 verifiers and both ends of an exchange, on top of OpenSSL's libcrypto.
#include "pgrelay/auth/scram.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <climits>
#include <utility>
#include <vector>

#include "pgrelay/protocol/sqlstate.hpp"

namespace pgrelay::auth {

namespace {

namespace sqlstate = protocol::sqlstate;

constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
// PostgreSQL keeps iterations in an int.
constexpr std::uint32_t kMaxIterations = INT_MAX;

const unsigned char* bytes_of(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string_view view_of(const ScramKey& key) {
  return {reinterpret_cast<const char*>(key.data()), key.size()};
}

// The OpenSSL calls below fail only on allocation failure; the key then stays zero, which
// no proof or signature matches.
ScramKey hmac_sha256(std::string_view key, std::string_view data) {
  ScramKey out{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), bytes_of(data), data.size(),
       out.data(), &length);
  return out;
}

ScramKey sha256(std::string_view data) {
  ScramKey out{};
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &length, EVP_sha256(), nullptr);
  return out;
}

ScramKey xor_keys(const ScramKey& a, const ScramKey& b) {
  ScramKey out{};
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = a[i] ^ b[i];
  return out;
}

bool keys_equal(const ScramKey& a, const ScramKey& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::optional<ScramKey> decode_key(std::string_view text) {
  const auto raw = base64_decode(text);
  if (!raw || raw->size() != ScramKey{}.size()) return std::nullopt;
  ScramKey key{};
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>((*raw)[i]);
  return key;
}

std::optional<std::uint32_t> parse_iterations(std::string_view text) {
  std::uint32_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc{} || ptr != end || value == 0 || value > kMaxIterations) {
    return std::nullopt;
  }
  return value;
}

std::optional<std::string> random_bytes(std::size_t count) {
  std::string out(count, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(count)) != 1) {
    return std::nullopt;
  }
  return out;
}

std::vector<std::string_view> split_commas(std::string_view text) {
  std::vector<std::string_view> parts;
  while (true) {
    const auto comma = text.find(',');
    parts.push_back(text.substr(0, comma));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return parts;
}

// One "x=value" attribute of a SCRAM message (RFC 5802 section 5.1).
struct Attribute {
  char name = 0;
  std::string_view value;
};

std::optional<Attribute> parse_attribute(std::string_view part) {
  if (part.size() < 2 || part[1] != '=') return std::nullopt;
  const char name = part[0];
  if (!((name >= 'a' && name <= 'z') || (name >= 'A' && name <= 'Z'))) return std::nullopt;
  return Attribute{name, part.substr(2)};
}

std::optional<std::string_view> attribute_value(std::string_view part, char name) {
  const auto attribute = parse_attribute(part);
  if (!attribute || attribute->name != name) return std::nullopt;
  return attribute->value;
}

// "=" and "," in a SCRAM user name are written "=3D" and "=2C".
std::string escape_user(std::string_view user) {
  std::string out;
  for (const char c : user) {
    if (c == '=') {
      out += "=3D";
    } else if (c == ',') {
      out += "=2C";
    } else {
      out += c;
    }
  }
  return out;
}

std::string channel_binding_header(const ChannelBinding& channel_binding) {
  if (channel_binding.tls_server_end_point) {
    return "p=" + std::string(kTlsServerEndPoint) + ",,";
  }
  return "n,,";
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t group = (static_cast<std::uint8_t>(bytes[i]) << 16) |
                                (static_cast<std::uint8_t>(bytes[i + 1]) << 8) |
                                static_cast<std::uint8_t>(bytes[i + 2]);
    out += kBase64Alphabet[(group >> 18) & 0x3f];
    out += kBase64Alphabet[(group >> 12) & 0x3f];
    out += kBase64Alphabet[(group >> 6) & 0x3f];
    out += kBase64Alphabet[group & 0x3f];
  }
  const std::size_t rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t group = static_cast<std::uint32_t>(static_cast<std::uint8_t>(bytes[i])) << 16;
    if (rest == 2)
      group |= static_cast<std::uint32_t>(static_cast<std::uint8_t>(bytes[i + 1])) << 8;
    out += kBase64Alphabet[(group >> 18) & 0x3f];
    out += kBase64Alphabet[(group >> 12) & 0x3f];
    out += rest == 2 ? kBase64Alphabet[(group >> 6) & 0x3f] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    std::uint32_t group = 0;
    int padding = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=') {
        // Padding only in the last two places of the last group, and only trailing.
        if (!last || j < 2) return std::nullopt;
        ++padding;
        group <<= 6;
        continue;
      }
      if (padding > 0) return std::nullopt;
      const auto index = kBase64Alphabet.find(c);
      if (index == std::string_view::npos) return std::nullopt;
      group = (group << 6) | static_cast<std::uint32_t>(index);
    }
    out += static_cast<char>((group >> 16) & 0xff);
    if (padding < 2) out += static_cast<char>((group >> 8) & 0xff);
    if (padding < 1) out += static_cast<char>(group & 0xff);
  }
  return out;
}

std::optional<ScramVerifier> parse_scram_verifier(std::string_view text) {
  // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
  const std::string prefix = std::string(kScramSha256Name) + "$";
  if (text.substr(0, prefix.size()) != prefix) return std::nullopt;
  text.remove_prefix(prefix.size());
  const auto dollar = text.find('$');
  if (dollar == std::string_view::npos) return std::nullopt;
  const std::string_view salt_part = text.substr(0, dollar);
  const std::string_view key_part = text.substr(dollar + 1);
  const auto colon1 = salt_part.find(':');
  const auto colon2 = key_part.find(':');
  if (colon1 == std::string_view::npos || colon2 == std::string_view::npos) return std::nullopt;

  const auto iterations = parse_iterations(salt_part.substr(0, colon1));
  auto salt = base64_decode(salt_part.substr(colon1 + 1));
  const auto stored_key = decode_key(key_part.substr(0, colon2));
  const auto server_key = decode_key(key_part.substr(colon2 + 1));
  if (!iterations || !salt || salt->empty() || !stored_key || !server_key) return std::nullopt;
  return ScramVerifier{*iterations, std::move(*salt), *stored_key, *server_key};
}

std::string format_scram_verifier(const ScramVerifier& verifier) {
  return std::string(kScramSha256Name) + "$" + std::to_string(verifier.iterations) + ":" +
         base64_encode(verifier.salt) + "$" + base64_encode(view_of(verifier.stored_key)) + ":" +
         base64_encode(view_of(verifier.server_key));
}

ScramKey scram_salted_password(std::string_view password, std::string_view salt,
                               std::uint32_t iterations) {
  ScramKey out{};
  const auto rounds = static_cast<int>(std::min(iterations, kMaxIterations));
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), bytes_of(salt),
                    static_cast<int>(salt.size()), rounds, EVP_sha256(),
                    static_cast<int>(out.size()), out.data());
  return out;
}

ScramVerifier make_scram_verifier(std::string_view password, std::string_view salt,
                                  std::uint32_t iterations) {
  const ScramKey salted = scram_salted_password(password, salt, iterations);
  const ScramKey client_key = hmac_sha256(view_of(salted), "Client Key");
  return ScramVerifier{iterations, std::string(salt), sha256(view_of(client_key)),
                       hmac_sha256(view_of(salted), "Server Key")};
}

std::optional<std::string> generate_scram_nonce() {
  auto raw = random_bytes(kScramNonceBytes);
  if (!raw) return std::nullopt;
  return base64_encode(*raw);
}

std::optional<std::string> generate_scram_salt() { return random_bytes(kScramSaltLength); }

bool is_scram_printable(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (const char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

std::optional<ScramMechanism> parse_scram_mechanism(std::string_view name) {
  if (name == kScramSha256Name) return ScramMechanism::kSha256;
  if (name == kScramSha256PlusName) return ScramMechanism::kSha256Plus;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Server

ScramServer::ScramServer(ScramVerifier verifier, std::string server_nonce,
                         ChannelBinding channel_binding, ScramMechanism mechanism)
    : verifier_(std::move(verifier)),
      server_nonce_(std::move(server_nonce)),
      channel_binding_(std::move(channel_binding)),
      mechanism_(mechanism) {
  assert(is_scram_printable(server_nonce_));
}

ScramError ScramServer::fail(ScramErrorKind kind, std::string_view sqlstate, std::string message) {
  state_ = State::kDone;
  return ScramError{kind, sqlstate, std::move(message)};
}

ScramServerFirstResult ScramServer::handle_client_first(std::string_view message) {
  const auto malformed = [&](std::string detail) {
    return fail(ScramErrorKind::kMalformed, sqlstate::kProtocolViolation,
                "malformed SCRAM message: " + std::move(detail));
  };
  if (state_ != State::kExpectClientFirst) return malformed("unexpected client-first-message");
  if (message.empty()) return malformed("empty client-first-message");

  // gs2-header: cbind-flag "," [authzid] ","
  const bool plus = mechanism_ == ScramMechanism::kSha256Plus;
  std::size_t pos = 0;
  cbind_flag_ = message[0];
  switch (cbind_flag_) {
    case 'n':
    case 'y':
      if (plus) {
        return malformed(
            "the client selected SCRAM-SHA-256-PLUS, but the message does not include channel "
            "binding data");
      }
      // 'y' means "I support channel binding but think the server does not": if we offered
      // it, someone stripped SCRAM-SHA-256-PLUS from our list (RFC 5802 section 6).
      if (cbind_flag_ == 'y' && channel_binding_.tls_server_end_point) {
        return malformed("SCRAM channel binding negotiation error");
      }
      if (message.size() < 2 || message[1] != ',') return malformed("comma expected after flag");
      pos = 2;
      break;
    case 'p': {
      if (!plus) {
        return malformed(
            "the client selected SCRAM-SHA-256 without channel binding, but the message includes "
            "channel binding data");
      }
      if (!channel_binding_.tls_server_end_point) {
        return malformed("channel binding requested, but the connection has no channel binding");
      }
      const auto comma = message.find(',');
      const auto type = attribute_value(message.substr(0, comma), 'p');
      if (comma == std::string_view::npos || !type) return malformed("bad channel-binding flag");
      if (*type != kTlsServerEndPoint) {
        return malformed("unsupported SCRAM channel-binding type \"" + std::string(*type) + "\"");
      }
      pos = comma + 1;
      break;
    }
    default:
      return malformed("unexpected channel-binding flag");
  }
  if (pos < message.size() && message[pos] == 'a') {
    return fail(ScramErrorKind::kMalformed, sqlstate::kFeatureNotSupported,
                "client uses authorization identity, but it is not supported");
  }
  if (pos >= message.size() || message[pos] != ',') return malformed("unexpected attribute");
  gs2_header_ = std::string(message.substr(0, pos + 1));
  const std::string_view bare = message.substr(pos + 1);

  // client-first-message-bare: [m=...,] n=user,r=nonce[,extensions]
  const auto parts = split_commas(bare);
  if (!parts.empty() && parts[0].substr(0, 2) == "m=") {
    return fail(ScramErrorKind::kMalformed, sqlstate::kFeatureNotSupported,
                "client requires an unsupported SCRAM extension");
  }
  if (parts.size() < 2 || !attribute_value(parts[0], 'n')) return malformed("user name expected");
  const auto nonce = attribute_value(parts[1], 'r');
  if (!nonce) return malformed("nonce expected");
  if (!is_scram_printable(*nonce)) return malformed("non-printable characters in SCRAM nonce");
  for (std::size_t i = 2; i < parts.size(); ++i) {
    if (!parse_attribute(parts[i])) return malformed("bad attribute in client-first-message");
  }

  client_nonce_ = std::string(*nonce);
  client_first_bare_ = std::string(bare);
  server_first_ = "r=" + client_nonce_ + server_nonce_ + ",s=" + base64_encode(verifier_.salt) +
                  ",i=" + std::to_string(verifier_.iterations);
  state_ = State::kExpectClientFinal;
  return server_first_;
}

ScramServerFinalResult ScramServer::handle_client_final(std::string_view message) {
  const auto malformed = [&](std::string detail) {
    return fail(ScramErrorKind::kMalformed, sqlstate::kProtocolViolation,
                "malformed SCRAM message: " + std::move(detail));
  };
  if (state_ != State::kExpectClientFinal) return malformed("unexpected client-final-message");
  state_ = State::kDone;

  // client-final-message: c=binding,r=nonce[,extensions],p=proof
  const auto parts = split_commas(message);
  if (parts.size() < 3) return malformed("client-final-message too short");
  for (const auto part : parts) {
    if (!parse_attribute(part)) return malformed("bad attribute in client-final-message");
  }
  const auto binding = attribute_value(parts[0], 'c');
  const auto nonce = attribute_value(parts[1], 'r');
  const auto proof_text = attribute_value(parts.back(), 'p');
  if (!binding || !nonce || !proof_text) return malformed("c=, r= and p= expected");

  if (!base64_decode(*binding)) return malformed("bad base64 in channel-binding attribute");
  std::string expected_binding = gs2_header_;
  if (cbind_flag_ == 'p') expected_binding += *channel_binding_.tls_server_end_point;
  // Comparing the base64 text, as PostgreSQL does; a client encodes canonically.
  if (*binding != base64_encode(expected_binding)) {
    if (cbind_flag_ == 'p') {
      return fail(ScramErrorKind::kChannelBindingMismatch,
                  sqlstate::kInvalidAuthorizationSpecification,
                  "SCRAM channel binding check failed");
    }
    return malformed("unexpected SCRAM channel-binding attribute in client-final-message");
  }
  if (*nonce != client_nonce_ + server_nonce_) return malformed("nonce does not match");
  const auto proof = decode_key(*proof_text);
  if (!proof) return malformed("malformed proof in client-final-message");

  const std::string_view without_proof =
      message.substr(0, message.size() - parts.back().size() - 1);
  const std::string auth_message =
      client_first_bare_ + "," + server_first_ + "," + std::string(without_proof);
  const ScramKey client_key =
      xor_keys(*proof, hmac_sha256(view_of(verifier_.stored_key), auth_message));
  if (!keys_equal(sha256(view_of(client_key)), verifier_.stored_key)) {
    return fail(ScramErrorKind::kWrongPassword, sqlstate::kInvalidPassword,
                "password authentication failed");
  }
  const ScramKey signature = hmac_sha256(view_of(verifier_.server_key), auth_message);
  return ScramSuccess{"v=" + base64_encode(view_of(signature)), client_key};
}

// ---------------------------------------------------------------------------------------------
// Client

ScramClient::ScramClient(ScramCredential credential, std::string client_nonce, std::string user,
                         ChannelBinding channel_binding)
    : credential_(std::move(credential)),
      client_nonce_(std::move(client_nonce)),
      user_(std::move(user)),
      channel_binding_(std::move(channel_binding)) {
  assert(is_scram_printable(client_nonce_));
}

std::string_view ScramClient::mechanism() const {
  return channel_binding_.tls_server_end_point ? kScramSha256PlusName : kScramSha256Name;
}

std::string ScramClient::client_first() {
  client_first_bare_ = "n=" + escape_user(user_) + ",r=" + client_nonce_;
  return channel_binding_header(channel_binding_) + client_first_bare_;
}

std::optional<std::string> ScramClient::handle_server_first(std::string_view message) {
  const auto failed = [&](std::string why) -> std::optional<std::string> {
    error_ = "malformed SCRAM server-first-message: " + std::move(why);
    return std::nullopt;
  };
  if (client_first_bare_.empty()) return failed("client-first-message not sent yet");
  if (!auth_message_.empty()) return failed("unexpected server-first-message");

  // server-first-message: r=nonce,s=salt,i=iterations[,extensions]
  const auto parts = split_commas(message);
  if (parts.size() < 3) return failed("too short");
  for (const auto part : parts) {
    if (!parse_attribute(part)) return failed("bad attribute");
  }
  const auto nonce = attribute_value(parts[0], 'r');
  const auto salt_text = attribute_value(parts[1], 's');
  const auto iterations_text = attribute_value(parts[2], 'i');
  if (!nonce || !salt_text || !iterations_text) return failed("r=, s= and i= expected");
  if (!is_scram_printable(*nonce) || nonce->size() <= client_nonce_.size() ||
      nonce->substr(0, client_nonce_.size()) != client_nonce_) {
    return failed("the nonce does not extend ours");
  }
  const auto salt = base64_decode(*salt_text);
  if (!salt || salt->empty()) return failed("bad salt");
  const auto iterations = parse_iterations(*iterations_text);
  if (!iterations) return failed("bad iteration count");

  ScramKey client_key{};
  if (const auto* password = std::get_if<std::string>(&credential_)) {
    const ScramKey salted = scram_salted_password(*password, *salt, *iterations);
    client_key = hmac_sha256(view_of(salted), "Client Key");
    server_key_ = hmac_sha256(view_of(salted), "Server Key");
  } else {
    const auto& keys = std::get<ScramClientKeys>(credential_);
    client_key = keys.client_key;
    server_key_ = keys.server_key;
  }

  std::string binding_input = channel_binding_header(channel_binding_);
  if (channel_binding_.tls_server_end_point)
    binding_input += *channel_binding_.tls_server_end_point;
  const std::string without_proof =
      "c=" + base64_encode(binding_input) + ",r=" + std::string(*nonce);
  auth_message_ = client_first_bare_ + "," + std::string(message) + "," + without_proof;
  const ScramKey stored_key = sha256(view_of(client_key));
  const ScramKey proof = xor_keys(client_key, hmac_sha256(view_of(stored_key), auth_message_));
  return without_proof + ",p=" + base64_encode(view_of(proof));
}

ScramServerCheck ScramClient::verify_server_final(std::string_view message) {
  if (auth_message_.empty()) {
    error_ = "server-final-message before server-first-message";
    return ScramServerCheck::kFailed;
  }
  const auto parts = split_commas(message);
  if (const auto server_error = attribute_value(parts[0], 'e')) {
    error_ = "SCRAM error from server: " + std::string(*server_error);
    return ScramServerCheck::kFailed;
  }
  for (const auto part : parts) {
    if (!parse_attribute(part)) {
      error_ = "malformed SCRAM server-final-message";
      return ScramServerCheck::kFailed;
    }
  }
  const auto value = attribute_value(parts[0], 'v');
  const auto signature = value ? decode_key(*value) : std::nullopt;
  if (!signature) {
    error_ = "malformed SCRAM server-final-message";
    return ScramServerCheck::kFailed;
  }
  if (!server_key_) return ScramServerCheck::kUnverifiable;
  if (!keys_equal(*signature, hmac_sha256(view_of(*server_key_), auth_message_))) {
    error_ = "incorrect server signature";
    return ScramServerCheck::kFailed;
  }
  return ScramServerCheck::kVerified;
}

}  // namespace pgrelay::auth
