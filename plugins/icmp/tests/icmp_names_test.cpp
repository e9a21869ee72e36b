// ICMP and ICMPv6 type and code names.
#include <gtest/gtest.h>

#include "names.hpp"

namespace {

using netwatcher::icmp::code_name;
using netwatcher::icmp::type_name;

TEST(IcmpNames, EchoAndErrorsInBothRegistries) {
  EXPECT_EQ(type_name(false, 8), "echo_request");
  EXPECT_EQ(type_name(false, 0), "echo_reply");
  EXPECT_EQ(type_name(true, 128), "echo_request");
  EXPECT_EQ(type_name(true, 129), "echo_reply");
  EXPECT_EQ(code_name(false, 3, 3), "port_unreachable");
  EXPECT_EQ(code_name(true, 1, 4), "port_unreachable");
  EXPECT_EQ(code_name(false, 11, 0), "ttl_exceeded");
  EXPECT_EQ(code_name(true, 3, 0), "hop_limit_exceeded");
  EXPECT_EQ(type_name(true, 135), "neighbor_solicitation");
}

TEST(IcmpNames, TheSameNumberMeansDifferentThingsPerFamily) {
  EXPECT_EQ(type_name(false, 3), "destination_unreachable");
  EXPECT_EQ(type_name(true, 3), "time_exceeded");
}

TEST(IcmpNames, UnknownValuesStayVisibleAsNumbers) {
  EXPECT_EQ(type_name(false, 200), "type_200");
  EXPECT_EQ(type_name(true, 0), "type_0");
  EXPECT_EQ(code_name(false, 3, 99), "code_99");
  EXPECT_EQ(code_name(false, 8, 0), "none");
  EXPECT_EQ(code_name(false, 8, 7), "code_7");
}

}  // namespace
