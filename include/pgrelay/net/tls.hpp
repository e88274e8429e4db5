// TLS for client connections (asio::ssl over OpenSSL).
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <memory>
#include <string>

#include "pgrelay/net/asio.hpp"

namespace pgrelay::net {

using TlsStream = asio::ssl::stream<tcp::socket&>;

/// A server-side TLS context from PEM files: TLS 1.2 or newer, no compression. Throws with a
/// clear message when the files cannot be used (a startup error).
[[nodiscard]] std::shared_ptr<asio::ssl::context> make_server_tls_context(
    const std::string& cert_file, const std::string& key_file);

}  // namespace pgrelay::net
