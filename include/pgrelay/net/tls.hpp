// TLS for client connections (asio::ssl over OpenSSL).
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <memory>
#include <string>

#include <optional>
#include <string>

#include "pgrelay/net/asio.hpp"

namespace pgrelay::net {

using TlsStream = asio::ssl::stream<tcp::socket&>;

/// A server-side TLS context from PEM files: TLS 1.2 or newer, no compression. Throws with a
/// clear message when the files cannot be used (a startup error).
[[nodiscard]] std::shared_ptr<asio::ssl::context> make_server_tls_context(
    const std::string& cert_file, const std::string& key_file);

/// tls-server-end-point channel-binding data (RFC 5929) of the first certificate in a PEM
/// file, for SCRAM-SHA-256-PLUS; nullopt when the file cannot be read.
[[nodiscard]] std::optional<std::string> tls_server_end_point(const std::string& cert_file);

}  // namespace pgrelay::net
