// The tcp plugin's sock_diag path (conn_table without the map iterator):
// SYN/FIN corrections, and a real dump of this process's own connection.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "sock_diag.hpp"

using namespace netwatcher::tcp;

namespace {

// The kernel's TCP state numbers as the plugin reads them from BTF.
const std::map<std::uint32_t, std::string> kStates = {
    {1, "ESTABLISHED"}, {2, "SYN_SENT"},  {3, "SYN_RECV"}, {4, "FIN_WAIT1"},
    {5, "FIN_WAIT2"},   {6, "TIME_WAIT"}, {7, "CLOSE"},    {8, "CLOSE_WAIT"},
    {9, "LAST_ACK"},    {10, "LISTEN"},   {11, "CLOSING"}, {12, "NEW_SYN_RECV"}};

DiagSocket socket_in(std::uint32_t state, std::uint64_t received, std::uint64_t acked,
                     std::uint32_t write_queue) {
  DiagSocket s;
  s.state = state;
  s.stats.bytes_received = received;
  s.stats.bytes_acked = acked;
  s.write_queue = write_queue;
  return s;
}

}  // namespace

TEST(TcpSockDiag, StatesComeFromTheKernelsNames) {
  DiagStates states(kStates);
  EXPECT_EQ(states.dump_mask, 0xffeu & ~(1u << 6) & ~(1u << 10));  // 1..11 but TIME_WAIT, LISTEN
  EXPECT_EQ(states.fin_received, (1u << 8) | (1u << 9) | (1u << 11));
  EXPECT_EQ(states.fin_sent, (1u << 4) | (1u << 5) | (1u << 9) | (1u << 11));
}

TEST(TcpSockDiag, ByteCountsLoseTheSynAndFinsLikeTheIterators) {
  DiagStates states(kStates);
  tcp_conn_info client{};
  client.acked_base = 1;  // the SYN of an active open
  tcp_conn_info server{};
  // ESTABLISHED: only the SYN comes off.
  auto s = stats_from_diag(socket_in(1, 500, 1001, 0), client, states);
  EXPECT_EQ(s.bytes_received, 500u);
  EXPECT_EQ(s.bytes_acked, 1000u);
  // CLOSE_WAIT: the peer's FIN was consumed and counted by the kernel.
  s = stats_from_diag(socket_in(8, 501, 300, 0), server, states);
  EXPECT_EQ(s.bytes_received, 500u);
  EXPECT_EQ(s.bytes_acked, 300u);
  // FIN_WAIT1 with our FIN acked (nothing left unacked) and not yet acked.
  EXPECT_EQ(stats_from_diag(socket_in(4, 0, 1002, 0), client, states).bytes_acked, 1000u);
  EXPECT_EQ(stats_from_diag(socket_in(4, 0, 1001, 1), client, states).bytes_acked, 1000u);
  // LAST_ACK after both FINs: one off each count.
  s = stats_from_diag(socket_in(9, 701, 51, 0), server, states);
  EXPECT_EQ(s.bytes_received, 700u);
  EXPECT_EQ(s.bytes_acked, 50u);
  // Never below zero.
  EXPECT_EQ(stats_from_diag(socket_in(1, 0, 0, 0), client, states).bytes_acked, 0u);
}

TEST(TcpSockDiag, DumpFindsThisProcesssConnectionWithItsCounters) {
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 1), 0);
  socklen_t length = sizeof address;
  ASSERT_EQ(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  int client = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  int server = ::accept(listener, nullptr, nullptr);
  ASSERT_GE(server, 0);
  char data[3000] = {};
  ASSERT_EQ(::write(client, data, sizeof data), static_cast<ssize_t>(sizeof data));
  std::size_t got = 0;
  while (got < sizeof data) {
    ssize_t n = ::read(server, data, sizeof data - got);
    ASSERT_GT(n, 0);
    got += static_cast<std::size_t>(n);
  }
  sockaddr_in local{};
  length = sizeof local;
  ASSERT_EQ(::getsockname(client, reinterpret_cast<sockaddr*>(&local), &length), 0);

  std::vector<DiagSocket> sockets;
  ASSERT_TRUE(dump_tcp_sockets(DiagStates(kStates), sockets).ok());
  const DiagSocket* mine = nullptr;
  const DiagSocket* peer = nullptr;
  for (const auto& s : sockets) {
    if (s.tuple.sport == ntohs(local.sin_port) && s.tuple.dport == ntohs(address.sin_port))
      mine = &s;
    if (s.tuple.sport == ntohs(address.sin_port) && s.tuple.dport == ntohs(local.sin_port))
      peer = &s;
    EXPECT_NE(s.state, 10u) << "listeners are not dumped";
  }
  ASSERT_NE(mine, nullptr);
  ASSERT_NE(peer, nullptr);
  EXPECT_EQ(mine->state, 1u);
  EXPECT_EQ(mine->tuple.family, AF_INET);
  EXPECT_EQ(std::memcmp(mine->tuple.saddr, &local.sin_addr, 4), 0);
  EXPECT_EQ(mine->stats.bytes_acked, 3001u);  // with the SYN
  EXPECT_EQ(peer->stats.bytes_received, 3000u);
  EXPECT_GT(mine->stats.snd_cwnd, 0u);
  EXPECT_GT(mine->stats.sndbuf, 0u);
  ::close(server);
  ::close(client);
  ::close(listener);
}
