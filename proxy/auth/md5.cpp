// PostgreSQL's md5 password hashes and challenge responses, on top of OpenSSL's EVP digests.
#include "pgrelay/auth/md5.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

namespace pgrelay::auth {

namespace {

// Lowercase hex of md5(data). EVP_Digest fails only on allocation failure; the digest then
// stays zero, which no response computed by a client matches by chance.
std::string md5_hex(std::string_view data) {
  std::array<unsigned char, 16> digest{};
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_md5(), nullptr);
  constexpr std::string_view kHex = "0123456789abcdef";
  std::string out;
  out.reserve(digest.size() * 2);
  for (const unsigned char byte : digest) {
    out += kHex[byte >> 4];
    out += kHex[byte & 0x0f];
  }
  return out;
}

}  // namespace

bool is_md5_hash(std::string_view secret) {
  if (secret.size() != kMd5HashLength || secret.substr(0, 3) != "md5") return false;
  for (const char c : secret.substr(3)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string md5_password_hash(std::string_view user, std::string_view password) {
  std::string input(password);
  input += user;
  return "md5" + md5_hex(input);
}

std::string md5_response(std::string_view secret, std::string_view user, const Md5Salt& salt) {
  std::string input = is_md5_hash(secret) ? std::string(secret) : md5_password_hash(user, secret);
  input.erase(0, 3);
  input.append(reinterpret_cast<const char*>(salt.data()), salt.size());
  return "md5" + md5_hex(input);
}

bool md5_check_response(std::string_view secret, std::string_view user, const Md5Salt& salt,
                        std::string_view response) {
  const std::string expected = md5_response(secret, user, salt);
  // The length of a valid response is public (35), so checking it first leaks nothing.
  return response.size() == expected.size() &&
         CRYPTO_memcmp(response.data(), expected.data(), expected.size()) == 0;
}

std::optional<Md5Salt> generate_md5_salt() {
  Md5Salt salt{};
  if (RAND_bytes(salt.data(), static_cast<int>(salt.size())) != 1) return std::nullopt;
  return salt;
}

}  // namespace pgrelay::auth
