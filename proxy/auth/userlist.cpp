// Parsing of PgBouncer-style userlist.txt files into users and typed secrets.
#include "pgrelay/auth/userlist.hpp"

#include <algorithm>
#include <optional>
#include <utility>

#include "pgrelay/auth/md5.hpp"

namespace pgrelay::auth {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view skip_spaces(std::string_view text) {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  return text;
}

// Reads one quoted field from the start of `text` (which must be '"'), undoubling "".
// Advances `text` past the closing quote; nullopt when the quote is not closed.
std::optional<std::string> read_quoted(std::string_view& text) {
  std::string out;
  std::size_t pos = 1;
  while (pos < text.size()) {
    if (text[pos] == '"') {
      if (pos + 1 < text.size() && text[pos + 1] == '"') {
        out += '"';
        pos += 2;
        continue;
      }
      text.remove_prefix(pos + 1);
      return out;
    }
    out += text[pos++];
  }
  return std::nullopt;
}

}  // namespace

std::optional<Secret> parse_secret(std::string_view text) {
  if (text.substr(0, kScramSha256Name.size() + 1) == std::string(kScramSha256Name) + "$") {
    auto verifier = parse_scram_verifier(text);
    if (!verifier) return std::nullopt;
    return Secret{std::move(*verifier)};
  }
  if (is_md5_hash(text)) return Secret{Md5Secret{std::string(text)}};
  return Secret{PlainSecret{std::string(text)}};
}

const UserlistEntry* Userlist::find(std::string_view user) const {
  const auto it = std::find_if(entries.begin(), entries.end(),
                               [&](const UserlistEntry& entry) { return entry.user == user; });
  return it == entries.end() ? nullptr : &*it;
}

Userlist parse_userlist(std::string_view text) {
  Userlist result;
  int line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const auto newline = text.find('\n');
    std::string_view line = skip_spaces(text.substr(0, newline));
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);

    const auto error = [&](std::string message) {
      result.errors.push_back(UserlistError{line_number, std::move(message)});
    };
    if (line.empty() || line.front() == ';' || line.front() == '#') continue;
    if (line.front() != '"') {
      error("expected a quoted user name");
      continue;
    }
    auto user = read_quoted(line);
    if (!user) {
      error("unterminated quoted user name");
      continue;
    }
    if (user->empty()) {
      error("empty user name");
      continue;
    }
    line = skip_spaces(line);
    if (line.empty()) {
      error("no secret for user \"" + *user + "\"");
      continue;
    }
    if (line.front() != '"') {
      error("expected whitespace and a quoted secret after the user name");
      continue;
    }
    const auto secret_text = read_quoted(line);
    if (!secret_text) {
      error("unterminated quoted secret");
      continue;
    }
    // An empty secret is allowed, as in PgBouncer: such a user can only log in where no
    // password is asked (method "trust"); password methods refuse it like PostgreSQL does.
    auto secret = parse_secret(*secret_text);
    if (!secret) {
      error("malformed SCRAM secret for user \"" + *user + "\"");
      continue;
    }
    // Fields after the secret are ignored, like PgBouncer does.
    std::erase_if(result.entries, [&](const UserlistEntry& entry) { return entry.user == *user; });
    result.entries.push_back(UserlistEntry{std::move(*user), std::move(*secret)});
  }
  return result;
}

}  // namespace pgrelay::auth
