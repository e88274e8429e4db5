// Server-side TLS context.
#include "pgrelay/net/tls.hpp"

#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <stdexcept>

namespace pgrelay::net {

std::shared_ptr<asio::ssl::context> make_server_tls_context(const std::string& cert_file,
                                                            const std::string& key_file) {
  auto context = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1 | asio::ssl::context::no_compression |
                       asio::ssl::context::single_dh_use);
  error_code ec;
  context->use_certificate_chain_file(cert_file, ec);
  if (ec) throw std::runtime_error("tls.cert \"" + cert_file + "\": " + ec.message());
  context->use_private_key_file(key_file, asio::ssl::context::pem, ec);
  if (ec) throw std::runtime_error("tls.key \"" + key_file + "\": " + ec.message());
  return context;
}

std::optional<std::string> tls_server_end_point(const std::string& cert_file) {
  // RFC 5929: the hash of the certificate with its signature's hash algorithm, except that MD5
  // and SHA-1 are replaced by SHA-256.
  FILE* file = std::fopen(cert_file.c_str(), "r");
  if (file == nullptr) return std::nullopt;
  X509* cert = PEM_read_X509(file, nullptr, nullptr, nullptr);
  std::fclose(file);
  if (cert == nullptr) return std::nullopt;
  int digest_nid = NID_undef;
  int key_nid = NID_undef;
  const EVP_MD* md = EVP_sha256();
  if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &digest_nid, &key_nid) == 1 &&
      digest_nid != NID_md5 && digest_nid != NID_sha1 && digest_nid != NID_undef) {
    if (const EVP_MD* found = EVP_get_digestbynid(digest_nid)) md = found;
  }
  unsigned char hash[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  const bool ok = X509_digest(cert, md, hash, &length) == 1;
  X509_free(cert);
  if (!ok) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(hash), length);
}

}  // namespace pgrelay::net
