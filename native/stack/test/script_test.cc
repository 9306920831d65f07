// Scripted conversations (see script.h): each proves one behaviour and fails
// on any segment the script did not ask for.
#include "script.h"

using namespace sidestep::stack;
using namespace sidestep::stack::test;

namespace {

void expect_script(const char* text, const Config& c = test_config()) {
  Script s(c);
  std::string err = s.run(text);
  if (!err.empty()) std::fprintf(stderr, "  script: %s\n", err.c_str());
  CHECK(err.empty());
}

const char* kHandshake = R"(
+0 listen
+0 < S 0:0(0) win 65535 <mss 1000>
+0 > S. 0:0(0) ack 1 win 65535 <mss 65495>
+0 < . 1:1(0) ack 1 win 65535
+0 accept
)";

}  // namespace

TEST(script_delayed_ack_fires_after_40ms) {
  expect_script((std::string(kHandshake) + R"(
+0 < . 1:501(500) ack 1 win 65535
+39 event Readable
+1 > . 1:1(0) ack 501 win 65535
+0 read 500
)").c_str());
}

TEST(script_rto_doubles_until_acked) {
  expect_script((std::string(kHandshake) + R"(
+0 write 100
+0 > P. 1:101(100) ack 1
+200 > P. 1:101(100) ack 1
+400 > P. 1:101(100) ack 1
+800 > P. 1:101(100) ack 1
+10 < . 1:1(0) ack 101 win 65535
+5000 nodelay   # nothing more happens
)").c_str());
}

TEST(script_connect_refused) {
  expect_script(R"(
+0 connect
+0 > S 0:0(0) win 65535 <mss 65495,sackOK,TS,wscale 5>
+5 < R. 0:0(0) ack 1 win 0
+0 event Error
+0 close
+0 event Closed
)");
}

TEST(script_fast_retransmit_on_third_dupack) {
  expect_script((std::string(kHandshake) + R"(
+0 nodelay
+0 write 4000
+0 > . 1:1001(1000) ack 1
+0 > . 1001:2001(1000) ack 1
+0 > . 2001:3001(1000) ack 1
+0 > P. 3001:4001(1000) ack 1
+1 < . 1:1(0) ack 1001 win 65535
+0 < . 1:1(0) ack 1001 win 65535
+0 < . 1:1(0) ack 1001 win 65535
+0 < . 1:1(0) ack 1001 win 65535
+0 > . 1001:2001(1000) ack 1
+1 < . 1:1(0) ack 4001 win 65535
)").c_str());
}

TEST(script_out_of_order_gets_sack_then_cumulative_ack) {
  expect_script(R"(
+0 listen
+0 < S 0:0(0) win 65535 <mss 1460,sackOK>
+0 > S. 0:0(0) ack 1 <mss 65495,sackOK>
+0 < . 1:1(0) ack 1 win 65535
+0 accept
+0 < . 101:201(100) ack 1 win 65535
+0 > . 1:1(0) ack 1 <sack 101:201>
+0 < . 301:401(100) ack 1 win 65535
+0 > . 1:1(0) ack 1 <sack 301:401,sack 101:201>
+0 < P. 1:101(100) ack 1 win 65535
+0 > . 1:1(0) ack 201 <sack 301:401>
+0 read 200
)");
}

TEST(script_active_close_ends_in_time_wait) {
  expect_script((std::string(kHandshake) + R"(
+0 close
+0 > F. 1:1(0) ack 1
+10 < . 1:1(0) ack 2 win 65535
+10 < F. 1:1(0) ack 2 win 65535
+0 > . 2:2(0) ack 2
+59999 < F. 1:1(0) ack 2 win 65535   # a repeated FIN restarts TIME-WAIT
+0 > . 2:2(0) ack 2
+59999 nodelay
+1 event Closed
)").c_str());
}

TEST(script_zero_window_then_update) {
  Config c = test_config();
  c.recv_buffer = 2000;
  expect_script(R"(
+0 listen
+0 < S 0:0(0) win 65535 <mss 1000>
+0 > S. 0:0(0) ack 1 win 2000
+0 < . 1:1(0) ack 1 win 65535
+0 accept
+0 < P. 1:1001(1000) ack 1 win 65535
+0 > . 1:1(0) ack 1001 win 1000
+0 < P. 1001:2001(1000) ack 1 win 65535
+0 > . 1:1(0) ack 2001 win 0
+0 read 1000
+0 > . 1:1(0) ack 2001 win 1000
)", c);
}

TEST(script_rst_for_unknown_connection) {
  expect_script(R"(
+0 < . 1:1(0) ack 77 win 65535
+0 > R 77:77(0)
)");
}

TEST(script_limited_transmit_sends_new_data_on_first_dupacks) {
  expect_script((std::string(kHandshake) + R"(
+0 nodelay
+0 write 12000
+0 > . 1:1001(1000) ack 1
+0 > . 1001:2001(1000) ack 1
+0 > . 2001:3001(1000) ack 1
+0 > . 3001:4001(1000) ack 1
+0 > . 4001:5001(1000) ack 1
+0 > . 5001:6001(1000) ack 1
+0 > . 6001:7001(1000) ack 1
+0 > . 7001:8001(1000) ack 1
+0 > . 8001:9001(1000) ack 1
+0 > . 9001:10001(1000) ack 1   # initial window: 10 segments
+1 < . 1:1(0) ack 1 win 65535   # the first duplicate ACK
+0 > . 10001:11001(1000) ack 1
+0 < . 1:1(0) ack 1 win 65535
+0 > P. 11001:12001(1000) ack 1
+0 < . 1:1(0) ack 1 win 65535
+0 > . 1:1001(1000) ack 1       # third: fast retransmit
+1 < . 1:1(0) ack 12001 win 65535
)").c_str());
}

TEST(script_sack_scoreboard_resends_the_second_hole_at_once) {
  expect_script(R"(
+0 listen
+0 < S 0:0(0) win 65535 <mss 1000,sackOK>
+0 > S. 0:0(0) ack 1 <mss 65495,sackOK>
+0 < . 1:1(0) ack 1 win 65535
+0 accept
+0 nodelay
+0 write 6000
+0 > . 1:1001(1000) ack 1
+0 > . 1001:2001(1000) ack 1
+0 > . 2001:3001(1000) ack 1
+0 > . 3001:4001(1000) ack 1
+0 > . 4001:5001(1000) ack 1
+0 > P. 5001:6001(1000) ack 1
+1 < . 1:1(0) ack 1 win 65535 <sack 1001:2001>
+0 < . 1:1(0) ack 1 win 65535 <sack 1001:3001>
+0 < . 1:1(0) ack 1 win 65535 <sack 1001:4001>
+0 > . 1:1001(1000) ack 1                         # fast retransmit
+0 < . 1:1(0) ack 1 win 65535 <sack 1001:4001,sack 5001:6001>
+0 > . 4001:5001(1000) ack 1                      # no new data: the hole (RFC 6675 rule 3)
+1 < . 1:1(0) ack 6001 win 65535
)");
}
