// Userlist snapshots with derived SCRAM verifiers, and stand-in verifiers for unknown users.
#include "pgrelay/auth/secrets.hpp"

#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <fstream>
#include <sstream>

namespace pgrelay::auth {

namespace {

/// Key for the stand-in salts; random per process.
const std::array<unsigned char, 32>& mock_key() {
  static const std::array<unsigned char, 32> key = [] {
    std::array<unsigned char, 32> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
      // Without randomness the salts are still per-user; only their unpredictability suffers.
      bytes.fill(0x5a);
    }
    return bytes;
  }();
  return key;
}

ScramKey hmac(std::string_view label, std::string_view user) {
  ScramKey out{};
  unsigned int length = 0;
  std::string data(label);
  data.push_back('\0');
  data.append(user);
  HMAC(EVP_sha256(), mock_key().data(), static_cast<int>(mock_key().size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &length);
  return out;
}

}  // namespace

SecretStore::SecretStore(Userlist userlist) : userlist_(std::move(userlist)) {
  for (const auto& entry : userlist_.entries) {
    const auto* plain = std::get_if<PlainSecret>(&entry.secret);
    if (plain == nullptr || plain->password.empty()) continue;
    const auto salt = generate_scram_salt();
    if (!salt) continue;
    derived_.emplace(entry.user, make_scram_verifier(plain->password, *salt));
  }
}

const Secret* SecretStore::find(std::string_view user) const {
  const auto* entry = userlist_.find(user);
  return entry != nullptr ? &entry->secret : nullptr;
}

const ScramVerifier* SecretStore::scram_verifier(std::string_view user) const {
  const auto* secret = find(user);
  if (secret == nullptr) return nullptr;
  if (const auto* verifier = std::get_if<ScramVerifier>(secret)) return verifier;
  const auto it = derived_.find(std::string(user));
  return it != derived_.end() ? &it->second : nullptr;
}

std::shared_ptr<const SecretStore> load_secret_store(const std::string& path, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = path + ": cannot read the file";
    return nullptr;
  }
  std::ostringstream text;
  text << in.rdbuf();
  Userlist userlist = parse_userlist(text.str());
  if (!userlist.errors.empty()) {
    error = path + ":" + std::to_string(userlist.errors.front().line) + ": " +
            userlist.errors.front().message;
    return nullptr;
  }
  return std::make_shared<const SecretStore>(std::move(userlist));
}

ScramVerifier mock_scram_verifier(std::string_view user) {
  ScramVerifier verifier;
  const ScramKey salt = hmac("salt", user);
  verifier.salt.assign(reinterpret_cast<const char*>(salt.data()), kScramSaltLength);
  verifier.stored_key = hmac("stored", user);
  verifier.server_key = hmac("server", user);
  return verifier;
}

}  // namespace pgrelay::auth
