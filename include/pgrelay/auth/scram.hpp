// SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it: verifiers, both ends of an exchange.
// Protocol: https://www.postgresql.org/docs/15/sasl-authentication.html
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace pgrelay::auth {

/// A SHA-256 sized key (StoredKey, ServerKey, ClientKey, SaltedPassword).
using ScramKey = std::array<std::uint8_t, 32>;

/// PostgreSQL's default `scram_iterations`.
inline constexpr std::uint32_t kScramDefaultIterations = 4096;
/// PostgreSQL's salt length for new verifiers.
inline constexpr std::size_t kScramSaltLength = 16;
/// Random bytes in a generated nonce (PostgreSQL uses 18).
inline constexpr std::size_t kScramNonceBytes = 18;
inline constexpr std::string_view kScramSha256Name = "SCRAM-SHA-256";
inline constexpr std::string_view kScramSha256PlusName = "SCRAM-SHA-256-PLUS";
/// The only channel-binding type PostgreSQL supports (RFC 5929).
inline constexpr std::string_view kTlsServerEndPoint = "tls-server-end-point";

/// Standard base64 with padding (RFC 4648 section 4).
[[nodiscard]] std::string base64_encode(std::string_view bytes);

/// Strict base64 decoding: length a multiple of 4, padding only at the end, no whitespace.
/// nullopt on anything else.
[[nodiscard]] std::optional<std::string> base64_decode(std::string_view text);

/// What a server stores for a SCRAM-SHA-256 user instead of the password.
struct ScramVerifier {
  std::uint32_t iterations = kScramDefaultIterations;
  std::string salt;  ///< raw bytes
  ScramKey stored_key{};
  ScramKey server_key{};

  friend bool operator==(const ScramVerifier&, const ScramVerifier&) = default;
};

/// Parses PostgreSQL's text form
/// `SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>`.
/// nullopt when anything is malformed (zero iterations, empty salt, keys not 32 bytes).
[[nodiscard]] std::optional<ScramVerifier> parse_scram_verifier(std::string_view text);

/// The text form `parse_scram_verifier` reads, byte for byte what PostgreSQL stores.
[[nodiscard]] std::string format_scram_verifier(const ScramVerifier& verifier);

/// SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations).
/// The password is used as its raw bytes: no SASLprep. That equals PostgreSQL for ASCII
/// passwords without control characters, and for any password PostgreSQL's SASLprep rejects;
/// a non-ASCII password SASLprep would normalise differently yields a different verifier.
[[nodiscard]] ScramKey scram_salted_password(std::string_view password, std::string_view salt,
                                             std::uint32_t iterations);

/// Builds the verifier for `password` (see `scram_salted_password` on SASLprep).
/// `iterations` must be at least 1.
[[nodiscard]] ScramVerifier make_scram_verifier(std::string_view password, std::string_view salt,
                                                std::uint32_t iterations = kScramDefaultIterations);

/// A printable nonce of `kScramNonceBytes` random bytes in base64; nullopt if the RNG fails.
[[nodiscard]] std::optional<std::string> generate_scram_nonce();

/// `kScramSaltLength` random bytes for a new verifier; nullopt if the RNG fails.
[[nodiscard]] std::optional<std::string> generate_scram_salt();

/// True for a valid SCRAM nonce: non-empty, bytes 0x21..0x7E except ','.
[[nodiscard]] bool is_scram_printable(std::string_view nonce);

/// The SASL mechanism a client chose in SASLInitialResponse.
enum class ScramMechanism { kSha256, kSha256Plus };

/// Maps a mechanism name to `ScramMechanism`; nullopt for names we do not offer.
[[nodiscard]] std::optional<ScramMechanism> parse_scram_mechanism(std::string_view name);

/// Channel binding available on a connection.
struct ChannelBinding {
  /// tls-server-end-point data: the hash of the server certificate (RFC 5929), or nullopt
  /// when the connection is not TLS (then SCRAM-SHA-256-PLUS is not offered).
  std::optional<std::string> tls_server_end_point;
};

enum class ScramErrorKind {
  kMalformed,               ///< protocol violation; `sqlstate` is 08P01 (0A000 for a=, m=)
  kChannelBindingMismatch,  ///< c= does not carry this connection's binding data; 28000
  kWrongPassword,           ///< the proof does not match the verifier; 28P01
};

/// A failed exchange; `sqlstate` and `message` go into a FATAL ErrorResponse.
struct ScramError {
  ScramErrorKind kind = ScramErrorKind::kMalformed;
  std::string_view sqlstate;
  std::string message;
};

/// A successful exchange, as seen by the server.
struct ScramSuccess {
  /// server-final-message ("v=<ServerSignature>"), sent in AuthenticationSASLFinal.
  std::string server_final;
  /// ClientProof XOR ClientSignature: lets the proxy log in to a backend holding the same
  /// verifier without knowing the password (see `ScramClientKeys`).
  ScramKey client_key{};
};

using ScramServerFirstResult = std::variant<std::string, ScramError>;
using ScramServerFinalResult = std::variant<ScramSuccess, ScramError>;

/// The server side of one SCRAM-SHA-256 exchange. Pure: the caller moves the messages.
class ScramServer {
 public:
  /// `server_nonce` must satisfy `is_scram_printable` (use `generate_scram_nonce`).
  /// `mechanism` is what the client chose; PLUS requires channel binding data.
  ScramServer(ScramVerifier verifier, std::string server_nonce, ChannelBinding channel_binding = {},
              ScramMechanism mechanism = ScramMechanism::kSha256);

  /// Reads client-first-message (the SASLInitialResponse data); returns server-first-message.
  /// The user name inside is ignored, as PostgreSQL does (libpq sends "n=,").
  [[nodiscard]] ScramServerFirstResult handle_client_first(std::string_view message);

  /// Reads client-final-message (SASLResponse data) and checks nonce, channel binding and proof.
  [[nodiscard]] ScramServerFinalResult handle_client_final(std::string_view message);

 private:
  enum class State { kExpectClientFirst, kExpectClientFinal, kDone };

  ScramError fail(ScramErrorKind kind, std::string_view sqlstate, std::string message);

  ScramVerifier verifier_;
  std::string server_nonce_;
  ChannelBinding channel_binding_;
  ScramMechanism mechanism_;
  State state_ = State::kExpectClientFirst;
  char cbind_flag_ = 'n';
  std::string gs2_header_;
  std::string client_nonce_;
  std::string client_first_bare_;
  std::string server_first_;
};

/// Key pass-through credentials: a ClientKey recovered by `ScramServer`, and the ServerKey
/// when a verifier is known (without it the server's signature cannot be checked).
struct ScramClientKeys {
  ScramKey client_key{};
  std::optional<ScramKey> server_key;
  friend bool operator==(const ScramClientKeys&, const ScramClientKeys&) = default;
};

/// What `ScramClient` logs in with: a plain password or pass-through keys.
using ScramCredential = std::variant<std::string, ScramClientKeys>;

/// Outcome of checking server-final-message.
enum class ScramServerCheck {
  kVerified,      ///< the signature matches: the server knows the verifier
  kUnverifiable,  ///< well formed, but there is no ServerKey to check it with
  kFailed,        ///< malformed, an "e=" error, or a wrong signature
};

/// The client side of one SCRAM-SHA-256 exchange, for logging in to a backend.
class ScramClient {
 public:
  /// `client_nonce` must satisfy `is_scram_printable`. `user` goes into "n=" (PostgreSQL
  /// ignores it; libpq sends it empty). With `channel_binding` set the client uses
  /// SCRAM-SHA-256-PLUS ("p=tls-server-end-point"), otherwise "n".
  ScramClient(ScramCredential credential, std::string client_nonce, std::string user = {},
              ChannelBinding channel_binding = {});

  /// The mechanism name for SASLInitialResponse.
  [[nodiscard]] std::string_view mechanism() const;

  /// client-first-message, the SASLInitialResponse data.
  [[nodiscard]] std::string client_first();

  /// Reads server-first-message; returns client-final-message with the proof, or nullopt
  /// (see `error()`) when it is malformed or the nonce does not extend ours.
  [[nodiscard]] std::optional<std::string> handle_server_first(std::string_view message);

  /// Checks server-final-message against the ServerSignature.
  [[nodiscard]] ScramServerCheck verify_server_final(std::string_view message);

  /// Why the last step failed, for logs.
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  ScramCredential credential_;
  std::string client_nonce_;
  std::string user_;
  ChannelBinding channel_binding_;
  std::string client_first_bare_;
  std::string auth_message_;
  std::optional<ScramKey> server_key_;
  std::string error_;
};

}  // namespace pgrelay::auth
