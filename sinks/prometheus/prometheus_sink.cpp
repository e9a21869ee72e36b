// Prometheus: an HTTP(S) /metrics endpoint (http_endpoint.hpp) and/or a
// node_exporter textfile, both in the text exposition format 0.0.4, with a cap
// on series per family.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "http_endpoint.hpp"
#include "netwatcher/format.hpp"
#include "netwatcher/sink.hpp"
#include "web_config.hpp"

namespace {

using namespace netwatcher;

std::string format_number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::string("NaN");
}

void append_escaped(std::string& out, const std::string& text, bool quote_too) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote_too) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

void append_labels(std::string& out, const std::vector<std::string>& names,
                   const LabelValues& values, const char* extra_name = nullptr,
                   const std::string& extra_value = {}) {
  if (names.empty() && !extra_name) return;
  out += '{';
  for (std::size_t i = 0; i < names.size() && i < values.size(); ++i) {
    if (i) out += ',';
    out += names[i];
    out += "=\"";
    append_escaped(out, values[i], true);
    out += '"';
  }
  if (extra_name) {
    if (!names.empty()) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

class PrometheusSink {
  // Distinct refused series remembered for counting; bounded like everything else.
  static constexpr std::size_t kMaxTrackedRefusals = 100000;

 public:
  SinkDescription describe() const {
    SinkDescription d{{
        {"listen",
         ConfigType::string,
         std::string("127.0.0.1:41420"),
         "address:port of the /metrics endpoint; \"\" disables it",
         {},
         {},
         {}},
        {"max_connections",
         ConfigType::integer,
         std::int64_t{2048},
         "connections the endpoint holds at once; more are refused until one closes",
         1,
         65536,
         {}},
        {"max_connections_per_ip",
         ConfigType::integer,
         std::int64_t{0},
         "connections from one client address at once; 0 = only max_connections applies",
         0,
         65536,
         {}},
        {"idle_timeout",
         ConfigType::integer,
         std::int64_t{10},
         "seconds a connection may stay silent (idle, or a request that stopped half-way) "
         "before it is closed",
         1,
         3600,
         {}},
        {"max_request_bytes",
         ConfigType::integer,
         std::int64_t{16384},
         "memory per connection for the request line and headers; larger requests get 431",
         4096,
         1 << 20,
         {}},
        {"textfile",
         ConfigType::string,
         std::string(""),
         "also write the metrics atomically to this .prom file (node_exporter textfile "
         "collector); \"\" disables it",
         {},
         {},
         {}},
        {"textfile_interval",
         ConfigType::floating,
         15.0,
         "seconds between textfile writes",
         {},
         {},
         {}},
        {"max_series_per_family",
         ConfigType::integer,
         std::int64_t{10000},
         "series kept per metric family; later ones are refused and counted",
         1,
         {},
         {}},
    }};
    for (auto& key : prometheus::web_config_keys()) d.config.push_back(std::move(key));
    return d;
  }

  Status open(const SinkContext& context) {
    metrics_ = context.metrics;
    instance_ = context.instance;
    max_series_ = static_cast<std::size_t>(context.config.get_int("max_series_per_family"));
    textfile_ = context.config.get_string("textfile");
    textfile_interval_ =
        std::chrono::duration<double>(context.config.get_double("textfile_interval"));
    if (textfile_interval_.count() <= 0)
      return Status::failure("key 'textfile_interval' must be positive");
    prometheus::EndpointOptions endpoint;
    if (Status s = prometheus::load_web_config(context.config, endpoint.web); !s) return s;
    const std::string& listen = context.config.get_string("listen");
    if (listen.empty() && (endpoint.web.tls() || endpoint.web.basic_auth()))
      return Status::failure(
          "TLS or basic_auth_users are set but key 'listen' is \"\" (no endpoint)");
    if (!listen.empty()) {
      endpoint.max_connections = static_cast<unsigned>(context.config.get_int("max_connections"));
      endpoint.max_connections_per_ip =
          static_cast<unsigned>(context.config.get_int("max_connections_per_ip"));
      endpoint.idle_timeout_s = static_cast<unsigned>(context.config.get_int("idle_timeout"));
      endpoint.connection_memory_bytes =
          static_cast<std::size_t>(context.config.get_int("max_request_bytes"));
      allow_descriptors(endpoint.max_connections);
      if (Status s = bind_listener(listen, endpoint.listen_fd); !s) return s;
      endpoint_ = std::make_unique<prometheus::HttpEndpoint>();
      Status s = endpoint_->start(
          std::move(endpoint), [this] { return scrape(); }, [this] { return readiness(); });
      if (!s) {
        endpoint_.reset();
        return Status::failure("endpoint on " + listen + ": " + s.message());
      }
    }
    if (!textfile_.empty()) {
      if (Status s = write_textfile(); !s) return s;
      textfile_thread_ = std::thread([this] { write_textfile_periodically(); });
    }
    return Status::success();
  }

  Status write(const Event&) { return Status::success(); }  // metrics only
  Status flush() { return Status::success(); }

  Status close() {
    if (endpoint_) endpoint_->stop();
    endpoint_.reset();
    {
      std::lock_guard lock(textfile_mutex_);
      stop_ = true;
    }
    textfile_wake_.notify_all();
    if (textfile_thread_.joinable()) textfile_thread_.join();
    if (!textfile_.empty()) return write_textfile();
    return Status::success();
  }

  // Renders the exposition text. Public for the tests through the sink API.
  std::string render() {
    std::lock_guard lock(render_mutex_);
    MetricsSnapshot snapshot = metrics_ ? metrics_() : MetricsSnapshot{};
    std::string out;
    out.reserve(64 * 1024);
    // Admission first, for every family: the sink's own row in the
    // netwatcher_table_* families then counts this render's refusals too.
    std::vector<std::vector<const MetricSeries*>> shown_by_family;
    shown_by_family.reserve(snapshot.size());
    std::size_t fullest = 0;
    for (const auto& family : snapshot) {
      const auto& spec = family.spec;
      // Series admitted earlier keep their place while they exist; gone ones
      // (e.g. closed connections) free theirs. New series fill the rest.
      auto& admitted = admitted_[spec.name];
      std::set<LabelValues> still_admitted;
      std::vector<const MetricSeries*> shown, candidates;
      for (const auto& series : family.series) {
        if (admitted.count(series.labels)) {
          still_admitted.insert(series.labels);
          shown.push_back(&series);
        } else {
          candidates.push_back(&series);
        }
      }
      auto& refused_seen = refused_seen_[spec.name];
      for (const MetricSeries* series : candidates) {
        if (still_admitted.size() < max_series_) {
          still_admitted.insert(series->labels);
          shown.push_back(series);
        } else if (refused_seen.size() < kMaxTrackedRefusals &&
                   refused_seen.insert(series->labels).second) {
          refused_[spec.name] += 1;
          ++refused_total_;
          warn_once(spec.name);
        }
      }
      fullest = std::max(fullest, still_admitted.size());
      admitted.swap(still_admitted);
      shown_by_family.push_back(std::move(shown));
    }
    for (std::size_t f = 0; f < snapshot.size(); ++f) {
      const auto& spec = snapshot[f].spec;
      std::vector<const MetricSeries*>& shown = shown_by_family[f];
      // This sink's cap is a bounded table like a plugin's, under its
      // instance name: the entries of its fullest family, and every series
      // it refused.
      MetricSeries own;
      own.labels = {instance_, "series_per_family"};
      if (spec.name == "netwatcher_table_entries") own.value = static_cast<double>(fullest);
      if (spec.name == "netwatcher_table_capacity") own.value = static_cast<double>(max_series_);
      if (spec.name == "netwatcher_table_full_total")
        own.value = static_cast<double>(refused_total_);
      const bool table_family = spec.name == "netwatcher_table_entries" ||
                                spec.name == "netwatcher_table_capacity" ||
                                spec.name == "netwatcher_table_full_total" ||
                                spec.name == "netwatcher_table_evictions_total";
      if (table_family && spec.labels.size() == 2) shown.push_back(&own);
      out += "# HELP " + spec.name + " ";
      append_escaped(out, spec.help, false);
      out += "\n# TYPE " + spec.name + " " + metric_type_name(spec.type) + "\n";
      for (const MetricSeries* s : shown) {
        if (spec.type != MetricType::histogram) {
          out += spec.name;
          append_labels(out, spec.labels, s->labels);
          out += ' ' + format_number(s->value) + '\n';
          continue;
        }
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < s->bucket_counts.size(); ++i) {
          cumulative += s->bucket_counts[i];
          std::string le = i < spec.buckets.size() ? format_number(spec.buckets[i]) : "+Inf";
          out += spec.name + "_bucket";
          append_labels(out, spec.labels, s->labels, "le", le);
          out += ' ' + std::to_string(cumulative) + '\n';
        }
        out += spec.name + "_sum";
        append_labels(out, spec.labels, s->labels);
        out += ' ' + format_number(s->sum) + '\n';
        out += spec.name + "_count";
        append_labels(out, spec.labels, s->labels);
        out += ' ' + std::to_string(s->count) + '\n';
      }
    }
    out +=
        "# HELP netwatcher_prometheus_series_refused_total Series not exported because their "
        "family reached max_series_per_family.\n"
        "# TYPE netwatcher_prometheus_series_refused_total counter\n";
    for (const auto& [family, count] : refused_) {
      out += "netwatcher_prometheus_series_refused_total";
      append_labels(out, {"family"}, {family});
      out += ' ' + std::to_string(count) + '\n';
    }
    return out;
  }

 private:
  // Sinks have no logger of their own: one line on stderr, where the host
  // logs, the first time a family is capped.
  void warn_once(const std::string& family) {
    if (warned_) return;
    warned_ = true;
    std::fprintf(stderr,
                 "[warning] sink '%s': metric family %s reached max_series_per_family (%zu); "
                 "its further series are not exported and are counted in "
                 "netwatcher_table_full_total{plugin=\"%s\",table=\"series_per_family\"}; "
                 "raise max_series_per_family of this [[sinks]] entry\n",
                 instance_.c_str(), family.c_str(), max_series_, instance_.c_str());
  }

  static Status bind_listener(const std::string& listen, int& listen_fd) {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos)
      return Status::failure("key 'listen' must be address:port, got \"" + listen + "\"");
    std::string host = listen.substr(0, colon);
    std::string port = listen.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* result = nullptr;
    if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &result))
      return Status::failure("key 'listen' = \"" + listen + "\": " + gai_strerror(rc));
    // Non-blocking: every server thread accepts from it.
    int fd = socket(result->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // The backlog absorbs a burst of connections (many scrapers at once).
    if (fd < 0 || bind(fd, result->ai_addr, result->ai_addrlen) != 0 ||
        ::listen(fd, SOMAXCONN) != 0) {
      int err = errno;
      freeaddrinfo(result);
      if (fd >= 0) ::close(fd);
      return Status::failure("cannot listen on " + listen + ": " + std::strerror(err));
    }
    freeaddrinfo(result);
    listen_fd = fd;
    return Status::success();
  }

  // Each connection is a descriptor: with the usual soft limit of 1024 (and
  // the host's BPF objects holding some), max_connections would not be
  // reachable. Raised as far as the hard limit allows.
  static void allow_descriptors(unsigned connections) {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    const rlim_t wanted = static_cast<rlim_t>(connections) + 1024;
    if (limit.rlim_cur >= wanted) return;
    limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
    setrlimit(RLIMIT_NOFILE, &limit);
  }

  // Concurrent scrapes share one rendering, so fifty scrapers cost two
  // renders (and gzips), not fifty. A request shares only a render that
  // started after it arrived: one already under way took its snapshot before,
  // and may miss what the request should see (e.g. a scrape just after
  // start-up joining one begun while the plugins were still attaching).
  std::shared_ptr<prometheus::ScrapeBody> scrape() {
    std::unique_lock lock(scrape_mutex_);
    const std::uint64_t wanted = renders_started_ + 1;
    for (;;) {
      if (renders_finished_ >= wanted) {
        if (latest_) return latest_;
        throw std::runtime_error("render failed");
      }
      if (!rendering_) break;
      scrape_done_.wait(lock);
    }
    rendering_ = true;
    const std::uint64_t mine = ++renders_started_;
    lock.unlock();
    std::shared_ptr<prometheus::ScrapeBody> body;
    try {
      body = std::make_shared<prometheus::ScrapeBody>(render());
    } catch (...) {
      lock.lock();
      latest_.reset();
      renders_finished_ = mine;
      rendering_ = false;
      scrape_done_.notify_all();
      throw;
    }
    lock.lock();
    latest_ = body;
    renders_finished_ = mine;
    rendering_ = false;
    scrape_done_.notify_all();
    return body;
  }

  // Ready once every enabled plugin is attached: the host sets
  // netwatcher_plugin_up to 0 for each of them before it opens the sinks, and
  // to 1 once the plugin's hooks are attached.
  prometheus::Readiness readiness() {
    MetricsSnapshot snapshot = metrics_ ? metrics_() : MetricsSnapshot{};
    for (const auto& family : snapshot) {
      if (family.spec.name != "netwatcher_plugin_up") continue;
      std::string waiting;
      for (const auto& series : family.series)
        if (series.value != 1 && !series.labels.empty())
          waiting += (waiting.empty() ? "" : ", ") + series.labels[0];
      if (family.series.empty()) return {false, "no plugin reported yet"};
      if (!waiting.empty()) return {false, "plugins not attached: " + waiting};
      return {true, {}};
    }
    return {false, "no plugin state reported yet"};
  }

  void write_textfile_periodically() {
    const auto interval =
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(textfile_interval_);
    auto next = std::chrono::steady_clock::now() + interval;
    std::unique_lock lock(textfile_mutex_);
    while (!textfile_wake_.wait_until(lock, next, [&] { return stop_; })) {
      lock.unlock();
      write_textfile();
      lock.lock();
      next += interval;
    }
  }

  // Temp file in the same directory + fsync + rename: the collector never
  // reads a half-written file.
  Status write_textfile() {
    std::string text = render();
    std::string tmp = textfile_ + ".tmp." + std::to_string(getpid());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return Status::failure("cannot create '" + tmp + "': " + std::strerror(errno));
    std::size_t written = 0;
    while (written < text.size()) {
      ssize_t n = ::write(fd, text.data() + written, text.size() - written);
      if (n <= 0) {
        int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        return Status::failure("cannot write '" + tmp + "': " + std::strerror(err));
      }
      written += n;
    }
    if (fsync(fd) != 0 || ::close(fd) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return Status::failure("cannot sync '" + tmp + "': " + std::strerror(err));
    }
    if (std::rename(tmp.c_str(), textfile_.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      return Status::failure("cannot rename to '" + textfile_ + "': " + std::strerror(err));
    }
    return Status::success();
  }

  std::function<MetricsSnapshot()> metrics_;
  std::size_t max_series_ = 10000;
  std::string textfile_;
  std::chrono::duration<double> textfile_interval_{15.0};
  std::unique_ptr<prometheus::HttpEndpoint> endpoint_;
  std::mutex textfile_mutex_;
  std::condition_variable textfile_wake_;
  bool stop_ = false;  // under textfile_mutex_
  std::thread textfile_thread_;
  std::mutex scrape_mutex_;
  std::condition_variable scrape_done_;
  bool rendering_ = false;  // under scrape_mutex_
  // Under scrape_mutex_: renders begun, and the last one to finish (one runs
  // at a time, so it is also the newest).
  std::uint64_t renders_started_ = 0, renders_finished_ = 0;
  std::shared_ptr<prometheus::ScrapeBody> latest_;
  std::mutex render_mutex_;
  std::map<std::string, std::set<LabelValues>> admitted_;
  std::map<std::string, std::set<LabelValues>> refused_seen_;
  std::uint64_t refused_total_ = 0;  // under render_mutex_, over every family
  bool warned_ = false;              // under render_mutex_
  std::string instance_ = "prometheus";
  std::map<std::string, std::uint64_t> refused_;
};

}  // namespace

NETWATCHER_SINK(PrometheusSink, "prometheus", "1.0.0",
                "Prometheus /metrics endpoint and node_exporter textfile")
