#include "web_config.hpp"

#include <crypt.h>
#include <gnutls/gnutls.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace netwatcher::prometheus {

namespace {

constexpr std::size_t kMaxPemBytes = 1 << 20;  // far above any certificate chain

Status read_pem(const std::string& key, const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Status::failure("key '" + key + "' = \"" + path +
                           "\": cannot read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  out = text.str();
  if (out.empty()) return Status::failure("key '" + key + "' = \"" + path + "\": file is empty");
  if (out.size() > kMaxPemBytes)
    return Status::failure("key '" + key + "' = \"" + path + "\": larger than 1 MiB");
  return Status::success();
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

bool is_bcrypt(const std::string& hash) {
  // $2a$, $2b$, $2y$, then a two-digit cost, '$' and 53 characters.
  return hash.size() == 60 && hash[0] == '$' && hash[1] == '2' &&
         (hash[2] == 'a' || hash[2] == 'b' || hash[2] == 'y') && hash[3] == '$' && hash[6] == '$';
}

// GnuTLS is the library libmicrohttpd serves TLS with: what it refuses here,
// the endpoint would refuse at start with no reason given.
Status check_tls(const WebConfig& web) {
  gnutls_certificate_credentials_t credentials = nullptr;
  if (gnutls_certificate_allocate_credentials(&credentials) != GNUTLS_E_SUCCESS)
    return Status::failure("cannot set up GnuTLS credentials");
  Status result = Status::success();
  gnutls_datum_t cert{reinterpret_cast<unsigned char*>(const_cast<char*>(web.cert_pem.data())),
                      static_cast<unsigned>(web.cert_pem.size())};
  gnutls_datum_t key{reinterpret_cast<unsigned char*>(const_cast<char*>(web.key_pem.data())),
                     static_cast<unsigned>(web.key_pem.size())};
  int rc = gnutls_certificate_set_x509_key_mem2(credentials, &cert, &key, GNUTLS_X509_FMT_PEM,
                                                nullptr, 0);
  if (rc < 0) {
    result = Status::failure(
        "keys 'tls_cert_file' = \"" + web.cert_file + "\" and 'tls_key_file' = \"" + web.key_file +
        "\": not a PEM certificate and matching private key: " + gnutls_strerror(rc));
  } else if (web.client_certs()) {
    gnutls_datum_t ca{reinterpret_cast<unsigned char*>(const_cast<char*>(web.client_ca_pem.data())),
                      static_cast<unsigned>(web.client_ca_pem.size())};
    rc = gnutls_certificate_set_x509_trust_mem(credentials, &ca, GNUTLS_X509_FMT_PEM);
    if (rc <= 0)
      result = Status::failure("key 'tls_client_ca_file' = \"" + web.client_ca_file +
                               "\": no PEM certificate in it" +
                               (rc < 0 ? std::string(": ") + gnutls_strerror(rc) : ""));
  }
  gnutls_certificate_free_credentials(credentials);
  return result;
}

}  // namespace

std::vector<ConfigKey> web_config_keys() {
  return {
      {"tls_cert_file",
       ConfigType::string,
       std::string(""),
       "PEM certificate (chain) the endpoint serves HTTPS with; \"\" serves plain HTTP. Needs "
       "tls_key_file",
       {},
       {},
       {}},
      {"tls_key_file",
       ConfigType::string,
       std::string(""),
       "PEM private key of tls_cert_file",
       {},
       {},
       {}},
      {"tls_client_ca_file",
       ConfigType::string,
       std::string(""),
       "PEM CA certificates; when set, every request must come with a client certificate they "
       "signed (exporter-toolkit's RequireAndVerifyClientCert), others get 403. Needs TLS",
       {},
       {},
       {}},
      {"basic_auth_users",
       ConfigType::string_list,
       std::vector<std::string>{},
       "users allowed in, as \"name:bcrypt-hash\" (e.g. from `htpasswd -nbBC 10 name pw`); "
       "empty: no authentication. Others get 401. Use with TLS off loopback",
       {},
       {},
       {}},
  };
}

Status parse_basic_auth_users(const std::vector<std::string>& entries, const std::string& key,
                              std::map<std::string, std::string>& out) {
  out.clear();
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const std::string& entry = entries[i];
    const std::string where = "key '" + key + "' entry " + std::to_string(i + 1);
    const auto colon = entry.find(':');
    if (colon == std::string::npos || colon == 0)
      return Status::failure(where + ": expected \"name:bcrypt-hash\"");
    std::string name = entry.substr(0, colon);
    std::string hash = entry.substr(colon + 1);
    if (!is_bcrypt(hash))
      return Status::failure(where + " (user '" + name +
                             "'): not a bcrypt hash ($2a$/$2b$/$2y$, 60 characters)");
    // libcrypt must be able to check it, or every login would fail.
    crypt_data data{};
    const char* probe = crypt_r("", hash.c_str(), &data);
    if (!probe || probe[0] == '*')
      return Status::failure(where + " (user '" + name + "'): libcrypt cannot check this hash");
    if (!out.emplace(std::move(name), std::move(hash)).second)
      return Status::failure(where + ": user '" + entry.substr(0, colon) + "' appears twice");
  }
  return Status::success();
}

Status load_web_config(const ConfigValues& config, WebConfig& out) {
  out = {};
  out.cert_file = config.get_string("tls_cert_file");
  out.key_file = config.get_string("tls_key_file");
  out.client_ca_file = config.get_string("tls_client_ca_file");
  if (out.cert_file.empty() != out.key_file.empty())
    return Status::failure(
        "keys 'tls_cert_file' and 'tls_key_file' go together: set both for TLS, or neither");
  if (!out.client_ca_file.empty() && out.cert_file.empty())
    return Status::failure(
        "key 'tls_client_ca_file' needs TLS: set 'tls_cert_file' and 'tls_key_file' too");
  if (!out.cert_file.empty()) {
    if (Status s = read_pem("tls_cert_file", out.cert_file, out.cert_pem); !s) return s;
    if (Status s = read_pem("tls_key_file", out.key_file, out.key_pem); !s) return s;
    if (!out.client_ca_file.empty())
      if (Status s = read_pem("tls_client_ca_file", out.client_ca_file, out.client_ca_pem); !s)
        return s;
    if (Status s = check_tls(out); !s) return s;
  }
  return parse_basic_auth_users(config.get_strings("basic_auth_users"), "basic_auth_users",
                                out.users);
}

bool password_matches(const std::string& password, const std::string& hash) {
  // crypt_data is about 32 KiB: on the heap, not on a server thread's stack.
  auto data = std::make_unique<crypt_data>();
  const char* result = crypt_r(password.c_str(), hash.c_str(), data.get());
  if (!result || result[0] == '*') return false;
  return constant_time_equal(result, hash);
}

BasicAuthVerifier::BasicAuthVerifier(std::map<std::string, std::string> users)
    : users_(std::move(users)) {}

bool BasicAuthVerifier::verify(const std::string& user, const std::string& password) {
  auto it = users_.find(user);
  if (it == users_.end()) {
    // As slow as a known user, so timing does not tell which names exist.
    password_matches(password, users_.begin()->second);
    return false;
  }
  {
    std::lock_guard lock(mutex_);
    auto good = last_good_.find(user);
    if (good != last_good_.end() && constant_time_equal(good->second, password)) return true;
  }
  if (!password_matches(password, it->second)) return false;
  std::lock_guard lock(mutex_);
  last_good_[user] = password;
  return true;
}

}  // namespace netwatcher::prometheus
