// Tests SCRAM-SHA-256: base64, verifiers, the RFC 7677 vector, malformed messages, key
// pass-through.
#include "pgrelay/auth/scram.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace pgrelay::auth {
namespace {

// RFC 7677 section 3.
constexpr std::string_view kRfcClientNonce = "rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kRfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
constexpr std::string_view kRfcSalt = "W22ZaJ0SNY7soEsUEjb6gQ==";
constexpr std::string_view kRfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
constexpr std::string_view kRfcServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr std::string_view kRfcClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr std::string_view kRfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
// StoredKey and ServerKey for "pencil" with the RFC salt, computed independently with Python.
constexpr std::string_view kRfcVerifierText =
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
    "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

const ScramVerifier& rfc_verifier() {
  static const ScramVerifier verifier =
      make_scram_verifier("pencil", *base64_decode(kRfcSalt), 4096);
  return verifier;
}

TEST(Base64, Rfc4648Vectors) {
  const std::vector<std::pair<std::string_view, std::string_view>> cases = {{"", ""},
                                                                            {"f", "Zg=="},
                                                                            {"fo", "Zm8="},
                                                                            {"foo", "Zm9v"},
                                                                            {"foob", "Zm9vYg=="},
                                                                            {"fooba", "Zm9vYmE="},
                                                                            {"foobar", "Zm9vYmFy"}};
  for (const auto& [raw, encoded] : cases) {
    EXPECT_EQ(base64_encode(raw), encoded);
    EXPECT_EQ(base64_decode(encoded), std::string(raw)) << encoded;
  }
}

TEST(Base64, RejectsMalformed) {
  for (const std::string_view bad :
       {"Z", "Zg=", "Z===", "====", "Zg==Zg==", "Zm9v\n", "Zm=v", "Zg!=", "Zm9 ", "Zm8=Zm9v"}) {
    EXPECT_FALSE(base64_decode(bad)) << bad;
  }
}

TEST(Base64, RoundTripsRandomBytes) {
  std::mt19937 rng(7);
  for (int size = 0; size < 100; ++size) {
    std::string raw(static_cast<std::size_t>(size), '\0');
    for (auto& c : raw) c = static_cast<char>(rng());
    EXPECT_EQ(base64_decode(base64_encode(raw)), raw);
  }
}

TEST(ScramVerifier, MakeMatchesIndependentComputation) {
  EXPECT_EQ(format_scram_verifier(rfc_verifier()), kRfcVerifierText);
  EXPECT_EQ(parse_scram_verifier(kRfcVerifierText), rfc_verifier());
}

TEST(ScramVerifier, RoundTrips) {
  const auto salt = generate_scram_salt();
  ASSERT_TRUE(salt);
  EXPECT_EQ(salt->size(), kScramSaltLength);
  const ScramVerifier verifier = make_scram_verifier("secret", *salt, 10);
  const std::string text = format_scram_verifier(verifier);
  EXPECT_EQ(text.substr(0, 17), "SCRAM-SHA-256$10:");
  const auto parsed = parse_scram_verifier(text);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, verifier);
  EXPECT_EQ(format_scram_verifier(*parsed), text);
  EXPECT_NE(make_scram_verifier("secreT", *salt, 10), verifier);
}

TEST(ScramVerifier, RejectsMalformed) {
  const std::string key = base64_encode(std::string(32, 'k'));
  const std::string keys = key + ":" + key;
  const std::vector<std::string> cases = {
      "",
      "SCRAM-SHA-256",
      "SCRAM-SHA-1$4096:c2FsdA==$" + keys,
      "scram-sha-256$4096:c2FsdA==$" + keys,
      "SCRAM-SHA-256$4096:c2FsdA==" + keys,
      "SCRAM-SHA-256$4096c2FsdA==$" + keys,
      "SCRAM-SHA-256$0:c2FsdA==$" + keys,
      "SCRAM-SHA-256$-1:c2FsdA==$" + keys,
      "SCRAM-SHA-256$abc:c2FsdA==$" + keys,
      "SCRAM-SHA-256$:c2FsdA==$" + keys,
      "SCRAM-SHA-256$4096 :c2FsdA==$" + keys,
      "SCRAM-SHA-256$99999999999:c2FsdA==$" + keys,
      "SCRAM-SHA-256$4096:c2FsdA=$" + keys,
      "SCRAM-SHA-256$4096:$" + keys,
      "SCRAM-SHA-256$4096:c2FsdA==$" + key,
      "SCRAM-SHA-256$4096:c2FsdA==$" + key + ":" + base64_encode(std::string(31, 'k')),
      "SCRAM-SHA-256$4096:c2FsdA==$" + base64_encode(std::string(33, 'k')) + ":" + key,
      "SCRAM-SHA-256$4096:c2FsdA==$" + keys + "$",
      "SCRAM-SHA-256$4096:c2FsdA==$" + keys + ":",
  };
  ASSERT_TRUE(parse_scram_verifier("SCRAM-SHA-256$4096:c2FsdA==$" + keys));
  for (const auto& text : cases) EXPECT_FALSE(parse_scram_verifier(text)) << text;
}

TEST(ScramNonce, IsPrintableAndRandom) {
  const auto a = generate_scram_nonce();
  const auto b = generate_scram_nonce();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->size(), 24U);
  EXPECT_TRUE(is_scram_printable(*a));
  EXPECT_NE(*a, *b);
  EXPECT_FALSE(is_scram_printable(""));
  EXPECT_FALSE(is_scram_printable("ab,c"));
  EXPECT_FALSE(is_scram_printable("ab c"));
  EXPECT_FALSE(is_scram_printable("ab\x7f"));
}

TEST(ScramMechanism, Names) {
  EXPECT_EQ(parse_scram_mechanism("SCRAM-SHA-256"), ScramMechanism::kSha256);
  EXPECT_EQ(parse_scram_mechanism("SCRAM-SHA-256-PLUS"), ScramMechanism::kSha256Plus);
  EXPECT_FALSE(parse_scram_mechanism("SCRAM-SHA-1"));
}

TEST(ScramServer, Rfc7677Vector) {
  ScramServer server(rfc_verifier(), std::string(kRfcServerNonce));
  const auto first = server.handle_client_first(kRfcClientFirst);
  ASSERT_TRUE(std::holds_alternative<std::string>(first));
  EXPECT_EQ(std::get<std::string>(first), kRfcServerFirst);
  const auto final_result = server.handle_client_final(kRfcClientFinal);
  ASSERT_TRUE(std::holds_alternative<ScramSuccess>(final_result));
  const auto& success = std::get<ScramSuccess>(final_result);
  EXPECT_EQ(success.server_final, kRfcServerFinal);
  // The recovered ClientKey is the one derived from the password.
  ScramClientKeys keys{success.client_key, std::nullopt};
  ScramClient client(keys, std::string(kRfcClientNonce), "user");
  (void)client.client_first();
  EXPECT_EQ(client.handle_server_first(kRfcServerFirst), std::string(kRfcClientFinal));
}

TEST(ScramClient, Rfc7677Vector) {
  ScramClient client(std::string("pencil"), std::string(kRfcClientNonce), "user");
  EXPECT_EQ(client.mechanism(), "SCRAM-SHA-256");
  EXPECT_EQ(client.client_first(), kRfcClientFirst);
  EXPECT_EQ(client.handle_server_first(kRfcServerFirst), std::string(kRfcClientFinal));
  EXPECT_EQ(client.verify_server_final(kRfcServerFinal), ScramServerCheck::kVerified);
}

TEST(ScramClient, RejectsWrongServerSignature) {
  ScramClient client(std::string("pencil"), std::string(kRfcClientNonce), "user");
  (void)client.client_first();
  ASSERT_TRUE(client.handle_server_first(kRfcServerFirst));
  EXPECT_EQ(client.verify_server_final("v=" + base64_encode(std::string(32, 'x'))),
            ScramServerCheck::kFailed);
  EXPECT_EQ(client.verify_server_final("e=invalid-proof"), ScramServerCheck::kFailed);
  EXPECT_EQ(client.error(), "SCRAM error from server: invalid-proof");
  EXPECT_EQ(client.verify_server_final("v=abc"), ScramServerCheck::kFailed);
  EXPECT_EQ(client.verify_server_final(""), ScramServerCheck::kFailed);
}

TEST(ScramClient, RejectsMalformedServerFirst) {
  const std::vector<std::string_view> cases = {
      "",
      "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==",             // no i=
      "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",          // nonce not extended
      "r=XOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",      // not our nonce
      "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",       // bad salt
      "r=rOprNGfwEbeRWgbNEkqO%hvY,s=,i=4096",                              // empty salt
      "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",         // zero iterations
      "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4x",        // bad iterations
      "s=W22ZaJ0SNY7soEsUEjb6gQ==,r=rOprNGfwEbeRWgbNEkqO%hvY,i=4096",      // wrong order
      "m=x,r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  // mandatory extension
      "r=rOprNGfwEbeRWgbNEkqO%hvY,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,",     // trailing comma
  };
  for (const auto message : cases) {
    ScramClient client(std::string("pencil"), std::string(kRfcClientNonce), "user");
    (void)client.client_first();
    EXPECT_FALSE(client.handle_server_first(message)) << message;
    EXPECT_FALSE(client.error().empty());
  }
  ScramClient not_started(std::string("pencil"), std::string(kRfcClientNonce));
  EXPECT_FALSE(not_started.handle_server_first(kRfcServerFirst));
}

TEST(ScramClient, EscapesUserName) {
  ScramClient client(std::string("pw"), "nonce", "a=b,c");
  EXPECT_EQ(client.client_first(), "n,,n=a=3Db=2Cc,r=nonce");
}

// Runs a whole exchange and returns the server's verdict on the client's final message.
ScramServerFinalResult exchange(ScramClient& client, ScramServer& server) {
  const auto server_first = server.handle_client_first(client.client_first());
  if (const auto* error = std::get_if<ScramError>(&server_first)) return *error;
  const auto client_final = client.handle_server_first(std::get<std::string>(server_first));
  EXPECT_TRUE(client_final) << client.error();
  return server.handle_client_final(client_final.value_or(""));
}

TEST(ScramExchange, PostgresStyleEmptyUser) {
  const ScramVerifier verifier = make_scram_verifier("hunter2", "saltsalt", 16);
  ScramClient client(std::string("hunter2"), *generate_scram_nonce());
  ScramServer server(verifier, *generate_scram_nonce());
  const auto result = exchange(client, server);
  ASSERT_TRUE(std::holds_alternative<ScramSuccess>(result));
  EXPECT_EQ(client.verify_server_final(std::get<ScramSuccess>(result).server_final),
            ScramServerCheck::kVerified);
}

TEST(ScramExchange, WrongPassword) {
  const ScramVerifier verifier = make_scram_verifier("hunter2", "saltsalt", 16);
  ScramClient client(std::string("hunter3"), "cnonce");
  ScramServer server(verifier, "snonce");
  const auto result = exchange(client, server);
  ASSERT_TRUE(std::holds_alternative<ScramError>(result));
  EXPECT_EQ(std::get<ScramError>(result).kind, ScramErrorKind::kWrongPassword);
  EXPECT_EQ(std::get<ScramError>(result).sqlstate, "28P01");
}

TEST(ScramExchange, KeyPassThrough) {
  const ScramVerifier verifier = make_scram_verifier("hunter2", "saltsalt", 16);
  // A client logs in to the proxy with its password...
  ScramClient frontend(std::string("hunter2"), "client-nonce-1");
  ScramServer proxy(verifier, "proxy-nonce");
  const auto first = exchange(frontend, proxy);
  ASSERT_TRUE(std::holds_alternative<ScramSuccess>(first));
  const ScramKey client_key = std::get<ScramSuccess>(first).client_key;

  // ...and the proxy logs in to a backend with the same verifier using only the ClientKey.
  ScramClient to_backend(ScramClientKeys{client_key, std::nullopt}, "proxy-client-nonce");
  ScramServer backend(verifier, "backend-nonce");
  const auto second = exchange(to_backend, backend);
  ASSERT_TRUE(std::holds_alternative<ScramSuccess>(second));
  EXPECT_EQ(std::get<ScramSuccess>(second).client_key, client_key);
  EXPECT_EQ(to_backend.verify_server_final(std::get<ScramSuccess>(second).server_final),
            ScramServerCheck::kUnverifiable);

  // With the ServerKey known the backend's signature is checked too.
  ScramClient verifying(ScramClientKeys{client_key, verifier.server_key}, "another-nonce");
  ScramServer backend2(verifier, "backend-nonce-2");
  const auto third = exchange(verifying, backend2);
  ASSERT_TRUE(std::holds_alternative<ScramSuccess>(third));
  EXPECT_EQ(verifying.verify_server_final(std::get<ScramSuccess>(third).server_final),
            ScramServerCheck::kVerified);
  EXPECT_EQ(verifying.verify_server_final(std::get<ScramSuccess>(second).server_final),
            ScramServerCheck::kFailed);

  // A ClientKey off by one bit is a wrong password.
  ScramKey bad_key = client_key;
  bad_key[0] ^= 1;
  ScramClient wrong(ScramClientKeys{bad_key, std::nullopt}, "nonce-3");
  ScramServer backend3(verifier, "backend-nonce-3");
  const auto fourth = exchange(wrong, backend3);
  ASSERT_TRUE(std::holds_alternative<ScramError>(fourth));
  EXPECT_EQ(std::get<ScramError>(fourth).kind, ScramErrorKind::kWrongPassword);
}

ScramErrorKind first_error(std::string_view client_first, ChannelBinding binding = {},
                           ScramMechanism mechanism = ScramMechanism::kSha256) {
  ScramServer server(rfc_verifier(), "snonce", std::move(binding), mechanism);
  const auto result = server.handle_client_first(client_first);
  EXPECT_TRUE(std::holds_alternative<ScramError>(result)) << client_first;
  if (!std::holds_alternative<ScramError>(result)) return ScramErrorKind::kWrongPassword;
  EXPECT_FALSE(std::get<ScramError>(result).message.empty());
  return std::get<ScramError>(result).kind;
}

TEST(ScramServer, RejectsMalformedClientFirst) {
  const std::vector<std::string_view> cases = {
      "",
      "n",
      "n,",
      "nn,n=,r=abc",
      "x,,n=,r=abc",
      "p=tls-server-end-point,,n=,r=abc",  // no channel binding on this connection
      "n,a=admin,n=,r=abc",                // authzid
      "n,,m=ext,n=,r=abc",                 // mandatory extension
      "n,,r=abc",                          // no user name
      "n,,n=",                             // no nonce
      "n,,n=,",
      "n,,n=,r=",        // empty nonce
      "n,,n=,x=abc",     // wrong attribute
      "n,,n=,r=a b",     // non-printable nonce
      "n,,n=,r=abc,c",   // bad extension syntax
      "n,,n=,r=abc,",    // trailing comma
      "n,,n=,r=abc\x01"  // control character in nonce
  };
  for (const auto message : cases) {
    EXPECT_EQ(first_error(message), ScramErrorKind::kMalformed) << message;
  }
}

TEST(ScramServer, ExtensionsAndAuthzidAreFeatureNotSupported) {
  for (const std::string_view message : {"n,,m=ext,n=,r=abc", "n,a=admin,n=,r=abc"}) {
    ScramServer server(rfc_verifier(), "snonce");
    const auto result = server.handle_client_first(message);
    ASSERT_TRUE(std::holds_alternative<ScramError>(result)) << message;
    EXPECT_EQ(std::get<ScramError>(result).kind, ScramErrorKind::kMalformed);
    EXPECT_EQ(std::get<ScramError>(result).sqlstate, "0A000") << message;
  }
}

TEST(ScramServer, ChannelBindingNegotiation) {
  const ChannelBinding tls{std::string("certhash")};
  // 'y' is fine when we offer no channel binding, a downgrade when we do.
  ScramServer plain(rfc_verifier(), "snonce");
  EXPECT_TRUE(std::holds_alternative<std::string>(plain.handle_client_first("y,,n=,r=abc")));
  EXPECT_EQ(first_error("y,,n=,r=abc", tls), ScramErrorKind::kMalformed);
  // 'n' is fine with SCRAM-SHA-256 over TLS, but not after choosing -PLUS.
  ScramServer no_binding(rfc_verifier(), "snonce", tls);
  EXPECT_TRUE(std::holds_alternative<std::string>(no_binding.handle_client_first("n,,n=,r=abc")));
  EXPECT_EQ(first_error("n,,n=,r=abc", tls, ScramMechanism::kSha256Plus),
            ScramErrorKind::kMalformed);
  // 'p' requires -PLUS, a supported type and data.
  EXPECT_EQ(first_error("p=tls-server-end-point,,n=,r=abc", tls), ScramErrorKind::kMalformed);
  EXPECT_EQ(first_error("p=tls-unique,,n=,r=abc", tls, ScramMechanism::kSha256Plus),
            ScramErrorKind::kMalformed);
  EXPECT_EQ(first_error("p=tls-server-end-point,,n=,r=abc", {}, ScramMechanism::kSha256Plus),
            ScramErrorKind::kMalformed);
  EXPECT_EQ(first_error("p,,n=,r=abc", tls, ScramMechanism::kSha256Plus),
            ScramErrorKind::kMalformed);
}

TEST(ScramServer, ChannelBindingData) {
  const std::string hash(
      "\x01\x02"
      "fake-certificate-hash"
      "\xff");
  const ScramVerifier verifier = make_scram_verifier("pw", "salt", 16);
  {
    ScramClient client(std::string("pw"), "cnonce", "", ChannelBinding{hash});
    EXPECT_EQ(client.mechanism(), "SCRAM-SHA-256-PLUS");
    ScramServer server(verifier, "snonce", ChannelBinding{hash}, ScramMechanism::kSha256Plus);
    const auto result = exchange(client, server);
    ASSERT_TRUE(std::holds_alternative<ScramSuccess>(result));
    EXPECT_EQ(client.verify_server_final(std::get<ScramSuccess>(result).server_final),
              ScramServerCheck::kVerified);
  }
  {
    // A man in the middle terminates TLS with another certificate.
    ScramClient client(std::string("pw"), "cnonce", "", ChannelBinding{hash + "x"});
    ScramServer server(verifier, "snonce", ChannelBinding{hash}, ScramMechanism::kSha256Plus);
    const auto result = exchange(client, server);
    ASSERT_TRUE(std::holds_alternative<ScramError>(result));
    EXPECT_EQ(std::get<ScramError>(result).kind, ScramErrorKind::kChannelBindingMismatch);
    EXPECT_EQ(std::get<ScramError>(result).sqlstate, "28000");
  }
}

ScramServerFinalResult final_for(std::string_view client_final) {
  ScramServer server(rfc_verifier(), std::string(kRfcServerNonce));
  EXPECT_TRUE(std::holds_alternative<std::string>(server.handle_client_first(kRfcClientFirst)));
  return server.handle_client_final(client_final);
}

TEST(ScramServer, RejectsMalformedClientFinal) {
  const std::string nonce = std::string(kRfcClientNonce) + std::string(kRfcServerNonce);
  const std::string proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
  ASSERT_TRUE(std::holds_alternative<ScramSuccess>(final_for(kRfcClientFinal)));
  const std::vector<std::string> cases = {
      "",
      "r=" + nonce + "," + proof,                                     // no c=
      "c=eSws,r=" + nonce + "," + proof,                              // "y,," but we got "n,,"
      "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCws,r=" + nonce + "," + proof,  // p= header
      "c=biw,r=" + nonce + "," + proof,                               // bad base64
      "c=biws,r=" + std::string(kRfcClientNonce) + "," + proof,       // server nonce missing
      "c=biws,r=" + nonce + "x," + proof,                             // nonce extended
      "c=biws,r=X" + nonce.substr(1) + "," + proof,                   // client nonce changed
      "c=biws," + proof,                                              // no r=
      "c=biws,r=" + nonce,                                            // no p=
      "c=biws,r=" + nonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",  // bad base64
      "c=biws,r=" + nonce + ",p=" + base64_encode(std::string(16, 'p')),       // short proof
      "c=biws,r=" + nonce + "," + proof + ",",                                 // trailing comma
      "c=biws,r=" + nonce + "," + proof + ",x=1",
      "c=biws,r=" + nonce + ",garbage," +
          proof,  // bad extension                              // p= not last
      "r=" + nonce + ",c=biws," + proof,  // wrong order
      std::string(kRfcClientFinal) + "\n",
  };
  for (const auto& message : cases) {
    const auto result = final_for(message);
    ASSERT_TRUE(std::holds_alternative<ScramError>(result)) << message;
    EXPECT_EQ(std::get<ScramError>(result).kind, ScramErrorKind::kMalformed) << message;
    EXPECT_EQ(std::get<ScramError>(result).sqlstate, "08P01") << message;
  }
}

TEST(ScramServer, RejectsMessagesOutOfOrder) {
  ScramServer server(rfc_verifier(), std::string(kRfcServerNonce));
  EXPECT_TRUE(std::holds_alternative<ScramError>(server.handle_client_final(kRfcClientFinal)));
  // An error ends the exchange.
  EXPECT_TRUE(std::holds_alternative<ScramError>(server.handle_client_first(kRfcClientFirst)));

  ScramServer twice(rfc_verifier(), std::string(kRfcServerNonce));
  ASSERT_TRUE(std::holds_alternative<std::string>(twice.handle_client_first(kRfcClientFirst)));
  EXPECT_TRUE(std::holds_alternative<ScramError>(twice.handle_client_first(kRfcClientFirst)));

  ScramServer replay(rfc_verifier(), std::string(kRfcServerNonce));
  ASSERT_TRUE(std::holds_alternative<std::string>(replay.handle_client_first(kRfcClientFirst)));
  ASSERT_TRUE(std::holds_alternative<ScramSuccess>(replay.handle_client_final(kRfcClientFinal)));
  EXPECT_TRUE(std::holds_alternative<ScramError>(replay.handle_client_final(kRfcClientFinal)));
}

TEST(ScramServer, RandomBytesNeverCrash) {
  std::mt19937 rng(11);
  for (int i = 0; i < 2000; ++i) {
    std::string message(rng() % 64, '\0');
    for (auto& c : message) c = static_cast<char>(rng());
    if (i % 2 == 0) message = "n,,n=,r=abc" + message.substr(0, message.size() / 4);
    ScramServer server(rfc_verifier(), "snonce");
    if (std::holds_alternative<std::string>(server.handle_client_first(message))) {
      EXPECT_FALSE(std::holds_alternative<ScramSuccess>(server.handle_client_final(message)));
    }
  }
}

}  // namespace
}  // namespace pgrelay::auth
