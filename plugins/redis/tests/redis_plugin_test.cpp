// The redis plugin fed crafted TCP segments through its L7Protocol, without
// the kernel: pairing in order across segments, SELECT, HELLO 3, pushes,
// retransmissions, bulk payloads past the capture, close and timeouts.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fake_host.hpp"
#include "loader.hpp"
#include "metric_store.hpp"
#include "netwatcher/l7_protocol.hpp"

using namespace netwatcher;
using namespace netwatcher::host;
using namespace netwatcher::fakes;

namespace {

class RedisPluginTest : public ::testing::Test {
 protected:
  void start(const std::vector<std::pair<std::string, ConfigValue>>& overrides = {}) {
    RefusedFile refused;
    auto component = load_component(std::string(NW_PLUGIN_DIR) + "/netwatcher-redis.so", refused);
    ASSERT_TRUE(component.has_value()) << refused.reason;
    component_ = *component;
    auto created = create_probe(component_);
    ASSERT_TRUE(created.ok()) << created.status().message();
    plugin_ = created.take();
    description_ = plugin_->describe();
    ConfigValues config;
    for (const auto& key : description_.config) config.set(key.name, key.default_value);
    for (const auto& [key, value] : overrides) config.set(key, value);
    ASSERT_TRUE(plugin_->configure(config, GlobalFilter{}).ok());
    host_ = std::make_unique<FakeHost>(description_);
    ASSERT_TRUE(plugin_->start(*host_).ok());
    ASSERT_EQ(host_->served.size(), 1u);
    protocol_ = host_->served[0];
  }

  // One segment of the client socket (outbound = it sent it), or of the
  // server's socket when `socket` is kServer.
  void send(std::uint64_t socket, bool outbound, std::string_view bytes, std::uint64_t ns,
            std::size_t wire = 0, std::uint32_t* seq_override = nullptr) {
    L7Packet p;
    p.socket = socket;
    p.outbound = outbound;
    p.tuple.family = AF_INET;
    inet_pton(AF_INET, "10.0.0.1", p.tuple.saddr);
    inet_pton(AF_INET, "10.0.0.2", p.tuple.daddr);
    p.tuple.sport = 40000;
    p.tuple.dport = 6379;
    p.pid = 77;
    p.comm = "client";
    std::uint32_t& seq = outbound ? out_seq_[socket] : in_seq_[socket];
    p.seq = seq_override ? *seq_override : seq;
    p.length = static_cast<std::uint32_t>(wire ? wire : bytes.size());
    if (!seq_override) seq += p.length;
    p.captured = {reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()};
    p.ns = ns;
    if (!claimed_.count(socket)) {
      ASSERT_EQ(protocol_->detect(p), L7Detection::yes) << bytes;
      claimed_.insert(socket);
    }
    protocol_->packet(p, emitter_);
  }

  int field(const std::string& name) { return description_.events[0].index_of(name); }
  template <class T>
  T get(std::size_t event, const std::string& name) {
    return std::get<T>(emitter_.events.at(event).values[field(name)]);
  }
  bool has(std::size_t event, const std::string& name) {
    return !std::holds_alternative<std::monostate>(emitter_.events.at(event).values[field(name)]);
  }
  std::vector<std::string> commands() {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < emitter_.events.size(); ++i)
      if (emitter_.events[i].index == 0) out.push_back(get<std::string>(i, "command"));
    return out;
  }
  double metric(const std::string& name, const LabelValues& labels) {
    // Answered commands reach the store when the host refreshes metrics.
    if (host_->metrics_refresh) {
      EXPECT_TRUE(host_->metrics_refresh().ok());
    }
    for (const auto& family : host_->store.snapshot())
      if (family.spec.name == name)
        for (const auto& s : family.series)
          if (s.labels == labels) return s.value;
    return -1;
  }

  static constexpr std::uint64_t kClient = 1, kServer = 2;
  Component component_;
  std::shared_ptr<ProbePlugin> plugin_;
  PluginDescription description_;
  std::unique_ptr<FakeHost> host_;
  L7Protocol* protocol_ = nullptr;
  CapturingEmitter emitter_;
  std::map<std::uint64_t, std::uint32_t> out_seq_, in_seq_;
  std::set<std::uint64_t> claimed_;
};

TEST_F(RedisPluginTest, PipelinedCommandsPairInOrderWithRepliesSplitOverSegments) {
  start();
  send(kClient, true,
       "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
       "*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*1\r\n$4\r\nPING\r\n",
       1000);
  send(kClient, false, "+OK\r\n$1\r", 3000);
  EXPECT_EQ(emitter_.events.size(), 1u);
  send(kClient, false, "\n1\r\n:", 5000);
  send(kClient, false, "7\r\n+PONG\r\n", 9000);
  ASSERT_EQ(commands(), (std::vector<std::string>{"SET", "GET", "INCR", "PING"}));
  EXPECT_EQ(get<std::string>(0, "side"), "client");
  EXPECT_EQ(get<std::string>(0, "key"), "a");
  EXPECT_EQ(get<std::string>(0, "reply"), "OK");
  EXPECT_EQ(get<std::uint64_t>(0, "args"), 3u);
  EXPECT_EQ(get<std::uint64_t>(0, "request_bytes"), 27u);
  EXPECT_EQ(get<double>(0, "latency_us"), 2.0);
  EXPECT_EQ(get<std::string>(1, "reply_type"), "bulk");
  EXPECT_EQ(get<std::uint64_t>(1, "reply_bytes"), 7u);
  EXPECT_EQ(get<double>(1, "latency_us"), 2.0);  // from the reply's first byte
  EXPECT_EQ(get<std::string>(2, "reply_type"), "integer");
  EXPECT_EQ(get<double>(2, "latency_us"), 4.0);
  EXPECT_FALSE(has(3, "key"));
  EXPECT_EQ(get<std::string>(3, "reply"), "PONG");
  EXPECT_EQ(metric("netwatcher_redis_commands_total", {"GET", "ok", "client", "0"}), 1.0);
}

TEST_F(RedisPluginTest, ServerSideSelectHelloErrorsAndDb) {
  start();
  // The server's socket receives the commands.
  send(kServer, false, "*2\r\n$6\r\nSELECT\r\n$2\r\n99\r\n", 10);
  send(kServer, true, "-ERR DB index is out of range\r\n", 20);
  send(kServer, false, "*2\r\n$6\r\nselect\r\n$1\r\n2\r\n", 30);
  send(kServer, true, "+OK\r\n", 40);
  send(kServer, false, "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", 50);
  send(kServer, true, "%1\r\n$5\r\nproto\r\n:3\r\n", 60);
  send(kServer, false, "*3\r\n$6\r\nCONFIG\r\n$3\r\nget\r\n$9\r\nmaxmemory\r\n", 70);
  send(kServer, true, "%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n", 80);
  ASSERT_EQ(commands(), (std::vector<std::string>{"SELECT", "SELECT", "HELLO", "CONFIG GET"}));
  EXPECT_EQ(get<std::string>(0, "side"), "server");
  EXPECT_EQ(get<std::string>(0, "error"), "ERR DB index is out of range");
  EXPECT_EQ(get<std::string>(0, "reply_type"), "error");
  EXPECT_EQ(get<std::uint64_t>(1, "db"), 0u);  // the failed SELECT changed nothing
  EXPECT_EQ(get<std::uint64_t>(2, "db"), 2u);
  EXPECT_EQ(get<std::uint64_t>(2, "proto"), 2u);
  EXPECT_EQ(get<std::uint64_t>(3, "proto"), 3u);
  EXPECT_EQ(get<std::string>(3, "reply_type"), "map");
  EXPECT_FALSE(has(3, "key"));
  EXPECT_EQ(metric("netwatcher_redis_commands_total", {"SELECT", "ERR", "server", "0"}), 1.0);
}

TEST_F(RedisPluginTest, PushesAreCountedNotPaired) {
  start();
  send(kClient, true, "*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n", 10);
  send(kClient, false, "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", 20);
  for (int i = 0; i < 3; ++i)
    send(kClient, false, "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", 30 + i);
  send(kClient, true, "*1\r\n$4\r\nPING\r\n", 40);
  send(kClient, false, "*2\r\n$4\r\npong\r\n$0\r\n\r\n", 50);
  ASSERT_EQ(commands(), (std::vector<std::string>{"SUBSCRIBE", "PING"}));
  EXPECT_EQ(metric("netwatcher_redis_pushes_total", {"message", "client"}), 3.0);
  EXPECT_EQ(metric("netwatcher_redis_parse_errors_total", {"orphan_reply"}), 0.0);
}

TEST_F(RedisPluginTest, RetransmissionsAreDroppedAndUncapturedBulksSkipped) {
  start();
  const std::string get_k = "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
  std::uint32_t zero = 0;
  send(kClient, true, get_k, 10);
  send(kClient, true, get_k, 11, 0, &zero);  // the same bytes again
  // A 5000-byte value of which the capture kept the start only.
  const std::string head = "$5000\r\n" + std::string(100, 'v');
  send(kClient, false, head, 20, 5000 + 7 + 2);
  send(kClient, true, "*1\r\n$4\r\nPING\r\n", 30);
  send(kClient, false, "+PONG\r\n", 40);
  ASSERT_EQ(commands(), (std::vector<std::string>{"GET", "PING"}));
  EXPECT_EQ(get<std::uint64_t>(0, "reply_bytes"), 5009u);
  EXPECT_EQ(metric("netwatcher_redis_parse_errors_total", {"lost_sync"}), 0.0);
}

TEST_F(RedisPluginTest, UnansweredCommandsAtCloseAndKeyFieldOff) {
  start({{"key_field", false}});
  send(kClient, true, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$3\r\nGET\r\n$1\r\nj\r\n", 10);
  send(kClient, false, "$-1\r\n", 20);
  protocol_->closed(kClient, emitter_);
  ASSERT_EQ(commands(), (std::vector<std::string>{"GET", "GET"}));
  EXPECT_EQ(get<std::string>(0, "reply_type"), "null");
  EXPECT_EQ(get<std::string>(1, "outcome"), "closed");
  EXPECT_FALSE(has(0, "key"));
  EXPECT_FALSE(has(1, "latency_us"));
  EXPECT_EQ(metric("netwatcher_redis_commands_unanswered_total", {"client", "0"}), 1.0);
}

TEST_F(RedisPluginTest, MonitorLinesAndResp3PushesAreNotReplies) {
  start();
  send(kClient, true, "*1\r\n$7\r\nMONITOR\r\n", 10);
  send(kClient, false, "+OK\r\n+1700000000.1 [0 127.0.0.1:5000] \"GET\" \"k\"\r\n", 20);
  send(kClient, false, "+1700000000.2 [0 127.0.0.1:5000] \"SET\" \"k\" \"v\"\r\n", 30);
  send(kServer, false, "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", 10);
  send(kServer, true, "%1\r\n$5\r\nproto\r\n:3\r\n", 20);
  send(kServer, false, "*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n", 30);
  send(kServer, true, ">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n", 40);
  send(kServer, true, ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n", 50);
  send(kServer, false, "*1\r\n$4\r\nPING\r\n", 60);
  send(kServer, true, "+PONG\r\n", 70);
  ASSERT_EQ(commands(), (std::vector<std::string>{"MONITOR", "HELLO", "SUBSCRIBE", "PING"}));
  EXPECT_EQ(get<std::string>(2, "reply_type"), "push");
  EXPECT_EQ(get<std::uint64_t>(3, "proto"), 3u);
  EXPECT_EQ(metric("netwatcher_redis_pushes_total", {"monitor", "client"}), 2.0);
  EXPECT_EQ(metric("netwatcher_redis_pushes_total", {"message", "server"}), 1.0);
  EXPECT_EQ(metric("netwatcher_redis_parse_errors_total", {"orphan_reply"}), 0.0);
}

TEST_F(RedisPluginTest, ATimedOutCommandsLateReplyIsConsumedNotReported) {
  start();
  // Sent at 1 ns: long past command_timeout when collect() runs.
  send(kClient, true, "*2\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n", 1);
  ASSERT_TRUE(plugin_->collect(emitter_).ok());
  ASSERT_EQ(commands(), std::vector<std::string>{"BLPOP"});
  EXPECT_EQ(get<std::string>(0, "outcome"), "timed_out");
  EXPECT_EQ(get<std::string>(0, "key"), "q");
  send(kClient, false, "*-1\r\n", 2);
  send(kClient, true, "*1\r\n$4\r\nPING\r\n", 3);
  send(kClient, false, "+PONG\r\n", 4);
  ASSERT_EQ(commands(), (std::vector<std::string>{"BLPOP", "PING"}));
  EXPECT_EQ(get<std::string>(1, "reply"), "PONG");
  EXPECT_EQ(metric("netwatcher_redis_commands_unanswered_total", {"client", "0"}), 1.0);
  EXPECT_EQ(metric("netwatcher_redis_parse_errors_total", {"orphan_reply"}), 0.0);
}

TEST_F(RedisPluginTest, InlineCommandsAndDetection) {
  start();
  send(kClient, true, "PING\r\n", 10);
  send(kClient, false, "+PONG\r\n", 20);
  ASSERT_EQ(commands(), std::vector<std::string>{"PING"});
  L7Packet http;
  const std::string_view request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  http.captured = {reinterpret_cast<const std::byte*>(request.data()), request.size()};
  http.length = static_cast<std::uint32_t>(request.size());
  EXPECT_EQ(protocol_->detect(http), L7Detection::no);
}

}  // namespace
