// TLS and basic auth for the /metrics endpoint, configured the way Prometheus
// exporters are (exporter-toolkit's web config): a certificate and key, an
// optional client CA whose certificates clients must present, and users with
// bcrypt hashes. The keys live in the prometheus sink's section of
// netwatcher.toml; every check here names the key (and file) it refuses.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "netwatcher/config.hpp"
#include "netwatcher/status.hpp"

namespace netwatcher::prometheus {

struct WebConfig {
  // PEM text read from the files (empty: that part is off).
  std::string cert_pem, key_pem, client_ca_pem;
  std::string cert_file, key_file, client_ca_file;  // for messages
  std::map<std::string, std::string> users;         // name -> bcrypt hash

  bool tls() const { return !cert_pem.empty(); }
  bool client_certs() const { return !client_ca_pem.empty(); }
  bool basic_auth() const { return !users.empty(); }
};

// The sink's config keys for the above (tls_cert_file, tls_key_file,
// tls_client_ca_file, basic_auth_users), with their defaults (all off).
std::vector<ConfigKey> web_config_keys();

// Reads the files the keys name and checks them: both or neither of cert and
// key, a pair GnuTLS accepts, a CA file with at least one certificate, users
// as "name:bcrypt-hash" with unique names and hashes libcrypt can check.
Status load_web_config(const ConfigValues& config, WebConfig& out);

// "name:hash" entries of basic_auth_users; `key` names the key in messages.
Status parse_basic_auth_users(const std::vector<std::string>& entries, const std::string& key,
                              std::map<std::string, std::string>& out);

// Checks passwords against the users' bcrypt hashes with crypt_r(3).
// Thread-safe. A bcrypt check costs milliseconds by design; the last password
// that matched each user is remembered, so a scraper sending the same
// credentials every scrape costs one check, not one per scrape, while wrong
// passwords always pay the full price.
class BasicAuthVerifier {
 public:
  explicit BasicAuthVerifier(std::map<std::string, std::string> users);
  bool verify(const std::string& user, const std::string& password);

 private:
  std::map<std::string, std::string> users_;
  std::mutex mutex_;
  std::map<std::string, std::string> last_good_;  // under mutex_
};

// True when `password` hashes to `hash` (any crypt(3) method libcrypt knows;
// the config accepts only bcrypt). Compared in constant time.
bool password_matches(const std::string& password, const std::string& hash);

}  // namespace netwatcher::prometheus
