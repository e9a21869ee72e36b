// Prometheus: an HTTP /metrics endpoint and/or a node_exporter textfile, both in
// the text exposition format 0.0.4, with a cap on series per family.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "netwatcher/format.hpp"
#include "netwatcher/sink.hpp"

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
    return {{
        {"listen",
         ConfigType::string,
         std::string("127.0.0.1:41420"),
         "address:port of the /metrics endpoint; \"\" disables it",
         {},
         {},
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
  }

  Status open(const SinkContext& context) {
    metrics_ = context.metrics;
    max_series_ = static_cast<std::size_t>(context.config.get_int("max_series_per_family"));
    textfile_ = context.config.get_string("textfile");
    textfile_interval_ =
        std::chrono::duration<double>(context.config.get_double("textfile_interval"));
    if (textfile_interval_.count() <= 0)
      return Status::failure("key 'textfile_interval' must be positive");
    const std::string& listen = context.config.get_string("listen");
    if (!listen.empty()) {
      if (Status s = bind_listener(listen); !s) return s;
    }
    if (!textfile_.empty()) {
      if (Status s = write_textfile(); !s) return s;
    }
    if (listen_fd_ >= 0 || !textfile_.empty()) thread_ = std::thread([this] { serve(); });
    return Status::success();
  }

  Status write(const Event&) { return Status::success(); }  // metrics only
  Status flush() { return Status::success(); }

  Status close() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    if (!textfile_.empty()) return write_textfile();
    return Status::success();
  }

  // Renders the exposition text. Public for the tests through the sink API.
  std::string render() {
    std::lock_guard lock(render_mutex_);
    MetricsSnapshot snapshot = metrics_ ? metrics_() : MetricsSnapshot{};
    std::string out;
    out.reserve(64 * 1024);
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
        }
      }
      admitted.swap(still_admitted);
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
  Status bind_listener(const std::string& listen) {
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
    int fd = socket(result->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, result->ai_addr, result->ai_addrlen) != 0 || ::listen(fd, 16) != 0) {
      int err = errno;
      freeaddrinfo(result);
      if (fd >= 0) ::close(fd);
      return Status::failure("cannot listen on " + listen + ": " + std::strerror(err));
    }
    freeaddrinfo(result);
    listen_fd_ = fd;
    return Status::success();
  }

  void serve() {
    auto next_textfile =
        std::chrono::steady_clock::now() +
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(textfile_interval_);
    while (!stop_.load()) {
      if (listen_fd_ >= 0) {
        pollfd pfd{listen_fd_, POLLIN, 0};
        if (poll(&pfd, 1, 200) > 0) {
          int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
          if (client >= 0) {
            handle(client);
            ::close(client);
          }
        }
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      if (!textfile_.empty() && std::chrono::steady_clock::now() >= next_textfile) {
        write_textfile();
        next_textfile +=
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(textfile_interval_);
      }
    }
  }

  void handle(int client) {
    timeval timeout{2, 0};
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    std::string request;
    char buf[4096];
    // A signal (SIGTERM, the host's capability drop) interrupts a socket
    // call that has a timeout even with SA_RESTART: retry it.
    while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384) {
      ssize_t n = recv(client, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      request.append(buf, n);
    }
    std::string first = request.substr(0, request.find("\r\n"));
    std::string status, type = "text/plain; charset=utf-8", body;
    if (first.rfind("GET /metrics ", 0) == 0 || first.rfind("GET /metrics?", 0) == 0) {
      status = "200 OK";
      type = "text/plain; version=0.0.4; charset=utf-8";
      body = render();
    } else if (first.rfind("GET / ", 0) == 0) {
      status = "200 OK";
      body = "netwatcher: metrics at /metrics\n";
    } else if (first.rfind("GET ", 0) == 0) {
      status = "404 Not Found";
      body = "not found; try /metrics\n";
    } else {
      status = "405 Method Not Allowed";
      body = "only GET is supported\n";
    }
    std::string response = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                           "\r\nContent-Length: " + std::to_string(body.size()) +
                           "\r\nConnection: close\r\n\r\n" + body;
    std::size_t sent = 0;
    while (sent < response.size()) {
      ssize_t n = send(client, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      sent += n;
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
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex render_mutex_;
  std::map<std::string, std::set<LabelValues>> admitted_;
  std::map<std::string, std::set<LabelValues>> refused_seen_;
  std::map<std::string, std::uint64_t> refused_;
};

}  // namespace

NETWATCHER_SINK(PrometheusSink, "prometheus", "1.0.0",
                "Prometheus /metrics endpoint and node_exporter textfile")
