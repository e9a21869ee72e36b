// The tcp plugin's decoder fed crafted records, without the kernel.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstring>

#include "fake_host.hpp"
#include "loader.hpp"
#include "tcp.h"

using namespace netwatcher;
using namespace netwatcher::host;
using namespace netwatcher::fakes;

namespace {

class TcpDecoder : public ::testing::Test {
 protected:
  void SetUp() override {
    RefusedFile refused;
    auto component = load_component(std::string(NW_PLUGIN_DIR) + "/netwatcher-tcp.so", refused);
    ASSERT_TRUE(component.has_value()) << refused.reason;
    component_ = *component;
    auto created = create_probe(component_);
    ASSERT_TRUE(created.ok()) << created.status().message();
    plugin_ = created.take();
    description_ = plugin_->describe();
    ConfigValues config;
    for (const auto& key : description_.config) config.set(key.name, key.default_value);
    config.set("extra", true);
    config.set("retrans", true);
    ASSERT_TRUE(plugin_->configure(config, GlobalFilter{}).ok());
    host_ = std::make_unique<FakeHost>(description_);
    ASSERT_TRUE(plugin_->start(*host_).ok());
  }

  int field(std::size_t event, const std::string& name) {
    return description_.events[event].index_of(name);
  }

  static tcp_conn_record record(std::uint32_t type) {
    tcp_conn_record rec{};
    rec.hdr.type = type;
    rec.hdr.size = sizeof rec;
    rec.hdr.timestamp_ns = 123456789;
    rec.sock = 0xffff888012345678ULL;
    rec.info.tuple.family = AF_INET;
    inet_pton(AF_INET, "10.77.0.1", rec.info.tuple.saddr);
    inet_pton(AF_INET, "10.77.0.2", rec.info.tuple.daddr);
    rec.info.tuple.sport = 40000;
    rec.info.tuple.dport = 5000;
    rec.info.pid = 4242;
    std::strcpy(rec.info.comm, "curl");
    rec.info.direction = TCP_DIRECTION_CLIENT;
    rec.info.start_ns = 1000;
    rec.info.fast_retrans = 2;
    rec.info.timeout_retrans = 1;
    rec.stats.bytes_received = 7;
    rec.stats.bytes_acked = 3000;
    rec.stats.srtt_us = 250;
    rec.stats.snd_cwnd = 10;
    rec.stats.total_retrans = 3;
    rec.duration_ns = 5500000;
    rec.state = 5;  // FIN_WAIT2 on every Linux so far
    return rec;
  }

  Status decode(const void* data, std::size_t size) {
    return plugin_->decode({static_cast<const std::byte*>(data), size}, emitter_);
  }

  Component component_;
  std::shared_ptr<ProbePlugin> plugin_;
  PluginDescription description_;
  std::unique_ptr<FakeHost> host_;
  CapturingEmitter emitter_;
};

TEST_F(TcpDecoder, OpenRecordBecomesTcpOpenEvent) {
  auto rec = record(TCP_RECORD_OPEN);
  ASSERT_TRUE(decode(&rec, sizeof rec).ok());
  ASSERT_EQ(emitter_.events.size(), 1u);
  const auto& e = emitter_.events[0];
  EXPECT_EQ(description_.events[e.index].name, "tcp_open");
  EXPECT_EQ(e.monotonic_ns, 123456789u);
  EXPECT_EQ(std::get<std::uint64_t>(e.values[field(0, "pid")]), 4242u);
  EXPECT_EQ(std::get<std::string>(e.values[field(0, "comm")]), "curl");
  EXPECT_EQ(std::get<std::string>(e.values[field(0, "saddr")]), "10.77.0.1");
  EXPECT_EQ(std::get<std::string>(e.values[field(0, "daddr")]), "10.77.0.2");
  EXPECT_EQ(std::get<std::uint64_t>(e.values[field(0, "sport")]), 40000u);
  EXPECT_EQ(std::get<std::uint64_t>(e.values[field(0, "dport")]), 5000u);
  EXPECT_EQ(std::get<std::string>(e.values[field(0, "direction")]), "client");
  EXPECT_EQ(std::get<std::string>(e.values[field(0, "family")]), "ipv4");
  // Opens are counted in the kernel, tracked or not (tcp_counters): the
  // record does not count again.
  for (const auto& family : host_->store.snapshot()) {
    if (family.spec.name != "netwatcher_tcp_connections_opened_total") continue;
    for (const auto& s : family.series) {
      EXPECT_EQ(s.value, 0) << s.labels[0];
    }
  }
}

TEST_F(TcpDecoder, CloseRecordCarriesStatsStateAndRetransmits) {
  auto rec = record(TCP_RECORD_CLOSE);
  inet_pton(AF_INET6, "fd77::1", rec.info.tuple.saddr);
  inet_pton(AF_INET6, "fd77::2", rec.info.tuple.daddr);
  rec.info.tuple.family = AF_INET6;
  ASSERT_TRUE(decode(&rec, sizeof rec).ok());
  ASSERT_EQ(emitter_.events.size(), 1u);
  const auto& v = emitter_.events[0].values;
  EXPECT_EQ(description_.events[emitter_.events[0].index].name, "tcp_close");
  EXPECT_EQ(std::get<std::string>(v[field(1, "family")]), "ipv6");
  EXPECT_EQ(std::get<std::string>(v[field(1, "saddr")]), "fd77::1");
  EXPECT_EQ(std::get<std::string>(v[field(1, "state")]), "FIN_WAIT2");
  EXPECT_EQ(std::get<std::uint64_t>(v[field(1, "duration_us")]), 5500u);
  EXPECT_EQ(std::get<std::uint64_t>(v[field(1, "bytes_acked")]), 3000u);
  EXPECT_EQ(std::get<std::uint64_t>(v[field(1, "bytes_received")]), 7u);
  EXPECT_EQ(std::get<std::uint64_t>(v[field(1, "srtt_us")]), 250u);
  EXPECT_EQ(std::get<std::uint64_t>(v[field(1, "cwnd")]), 10u);
  EXPECT_EQ(std::get<std::uint64_t>(v[field(1, "fast_retrans")]), 2u);
  EXPECT_EQ(std::get<std::uint64_t>(v[field(1, "timeout_retrans")]), 1u);
  EXPECT_EQ(std::get<std::uint64_t>(v[field(1, "total_retrans")]), 3u);
}

TEST_F(TcpDecoder, AdoptedConnectionHasNoDuration) {
  auto rec = record(TCP_RECORD_CLOSE);
  rec.info.start_ns = 0;
  rec.info.direction = TCP_DIRECTION_UNKNOWN;
  ASSERT_TRUE(decode(&rec, sizeof rec).ok());
  const auto& v = emitter_.events[0].values;
  EXPECT_TRUE(std::holds_alternative<std::monostate>(v[field(1, "duration_us")]));
  EXPECT_EQ(std::get<std::string>(v[field(1, "direction")]), "unknown");
}

TEST_F(TcpDecoder, ShortAndUnknownRecordsAreErrorsNotCrashes) {
  auto rec = record(TCP_RECORD_CLOSE);
  Status s = decode(&rec, 10);
  EXPECT_EQ(s.message(), "record of 10 bytes is shorter than its header");
  s = decode(&rec, sizeof rec - 1);
  EXPECT_EQ(s.message(), "record type 2 has " + std::to_string(sizeof rec - 1) +
                             " bytes, expected " + std::to_string(sizeof rec));
  rec.hdr.type = 99;
  s = decode(&rec, sizeof rec);
  EXPECT_EQ(s.message(), "unknown record type 99");
  EXPECT_TRUE(emitter_.events.empty());
}

TEST_F(TcpDecoder, SchemasMatchTheValuesTheDecoderEmits) {
  auto open = record(TCP_RECORD_OPEN);
  auto close = record(TCP_RECORD_CLOSE);
  ASSERT_TRUE(decode(&open, sizeof open).ok());
  ASSERT_TRUE(decode(&close, sizeof close).ok());
  for (const auto& e : emitter_.events)
    EXPECT_EQ(e.values.size(), description_.events[e.index].fields.size())
        << description_.events[e.index].name;
}

}  // namespace
