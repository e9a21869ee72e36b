#include "mysql_protocol.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "netwatcher/l7_framing.hpp"

using namespace netwatcher::mysql;
using netwatcher::FramedMessage;
using netwatcher::LengthPrefix;
using netwatcher::LengthPrefixedStream;

namespace {

// Packets are written out field by field; these save typing the encodings.
using Bytes = std::vector<std::uint8_t>;

void append(Bytes& out, std::initializer_list<std::uint8_t> bytes) {
  out.insert(out.end(), bytes);
}
void le16(Bytes& out, std::uint16_t v) {
  append(out, {std::uint8_t(v), std::uint8_t(v >> 8)});
}
void le32(Bytes& out, std::uint32_t v) {
  le16(out, std::uint16_t(v));
  le16(out, std::uint16_t(v >> 16));
}
void text(Bytes& out, std::string_view s) {
  out.insert(out.end(), s.begin(), s.end());
}
void nul_text(Bytes& out, std::string_view s) {
  text(out, s);
  out.push_back(0);
}
void lenenc(Bytes& out, std::uint64_t v) {
  if (v < 0xfb) {
    out.push_back(std::uint8_t(v));
  } else if (v <= 0xffff) {
    out.push_back(0xfc);
    le16(out, std::uint16_t(v));
  } else if (v <= 0xffffff) {
    append(out, {0xfd, std::uint8_t(v), std::uint8_t(v >> 8), std::uint8_t(v >> 16)});
  } else {
    out.push_back(0xfe);
    le32(out, std::uint32_t(v));
    le32(out, std::uint32_t(v >> 32));
  }
}
void lenenc_text(Bytes& out, std::string_view s) {
  lenenc(out, s.size());
  text(out, s);
}
// A packet: 3-byte length, sequence id, body.
Bytes packet(std::uint8_t seq, const Bytes& body) {
  Bytes out;
  append(out, {std::uint8_t(body.size()), std::uint8_t(body.size() >> 8),
               std::uint8_t(body.size() >> 16), seq});
  out.insert(out.end(), body.begin(), body.end());
  return out;
}
std::span<const std::byte> view(const Bytes& bytes) {
  return {reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()};
}

constexpr std::uint32_t kClientCaps = capability::protocol_41 | capability::secure_connection |
                                      capability::plugin_auth |
                                      capability::plugin_auth_lenenc_data |
                                      capability::connect_with_db | 0x00020000 /* multi results */;

// MariaDB 10.11's greeting, as its fields say.
Bytes greeting(std::uint32_t capabilities = 0xf7fe | (0x81bf << 16)) {
  Bytes b = {10};
  nul_text(b, "5.5.5-10.11.19-MariaDB-0+deb12u1");
  le32(b, 42);                                   // connection id
  text(b, "abcdefgh");                           // auth data, part 1
  b.push_back(0);                                // filler
  le16(b, std::uint16_t(capabilities));          // lower capabilities
  b.push_back(45);                               // charset
  le16(b, 0x0002);                               // status: autocommit
  le16(b, std::uint16_t(capabilities >> 16));    // upper capabilities
  b.push_back(21);                               // auth data length
  append(b, {0, 0, 0, 0, 0, 0, 0x1d, 0, 0, 0});  // reserved: MariaDB's capabilities last
  text(b, "ijklmnopqrst");
  b.push_back(0);
  nul_text(b, "mysql_native_password");
  return b;
}

Bytes handshake_response(std::uint32_t caps, std::string_view user, std::string_view password,
                         std::string_view db) {
  Bytes b;
  le32(b, caps);
  le32(b, 16 * 1024 * 1024);
  b.push_back(45);
  for (int i = 0; i < 19; ++i) b.push_back(0);
  le32(b, 0x1d);  // MariaDB's extended capabilities
  nul_text(b, user);
  if (caps & capability::plugin_auth_lenenc_data)
    lenenc_text(b, password);
  else {
    b.push_back(std::uint8_t(password.size()));
    text(b, password);
  }
  if (caps & capability::connect_with_db) nul_text(b, db);
  if (caps & capability::plugin_auth) nul_text(b, "mysql_native_password");
  return b;
}

Bytes ok_body(std::uint64_t affected, std::uint64_t last_id, std::uint16_t status = 2,
              std::uint16_t warnings = 0, std::uint8_t head = 0x00) {
  Bytes b = {head};
  lenenc(b, affected);
  lenenc(b, last_id);
  le16(b, status);
  le16(b, warnings);
  return b;
}
Bytes err_body(std::uint16_t code, std::string_view state, std::string_view message) {
  Bytes b = {0xff};
  le16(b, code);
  if (!state.empty()) {
    b.push_back('#');
    text(b, state);
  }
  text(b, message);
  return b;
}
Bytes eof_body(std::uint16_t status = 2, std::uint16_t warnings = 0) {
  Bytes b = {0xfe};
  le16(b, warnings);
  le16(b, status);
  return b;
}
Bytes column_def(std::string_view name) {
  Bytes b;
  for (std::string_view s : {std::string_view("def"), std::string_view("db"), std::string_view("t"),
                             std::string_view("t"), name, name})
    lenenc_text(b, s);
  b.push_back(0x0c);
  le16(b, 45);
  le32(b, 11);
  append(b, {3, 0, 0, 0, 0, 0});
  return b;
}
Bytes text_row(std::initializer_list<std::string_view> values) {
  Bytes b;
  for (auto v : values) lenenc_text(b, v);
  return b;
}
Bytes count_body(std::uint64_t n) {
  Bytes b;
  lenenc(b, n);
  return b;
}

// Feeds the bodies to a reader; the number of packets it took to finish.
std::size_t feed_all(ResponseReader& reader, const std::vector<Bytes>& bodies) {
  for (std::size_t i = 0; i < bodies.size(); ++i)
    if (reader.feed(view(bodies[i]), bodies[i].size())) return i + 1;
  return 0;
}

// A text result set: column count, definitions, [EOF], rows, terminator.
std::vector<Bytes> result_set(std::size_t columns, std::size_t rows, bool deprecate_eof,
                              std::uint16_t final_status = 2) {
  std::vector<Bytes> out = {count_body(columns)};
  // std::string("c") + ...: gcc 12 at -O2 misreads "c" + std::string as an
  // overlapping copy (-Wrestrict).
  for (std::size_t i = 0; i < columns; ++i)
    out.push_back(column_def(std::string("c").append(std::to_string(i))));
  if (!deprecate_eof) out.push_back(eof_body());
  for (std::size_t r = 0; r < rows; ++r) out.push_back(text_row({std::to_string(r), "x"}));
  out.push_back(deprecate_eof ? ok_body(0, 0, final_status, 1, 0xfe) : eof_body(final_status, 1));
  return out;
}

TEST(MysqlLenenc, ReadsEveryWidthAndRefusesWhatIsNotThere) {
  for (std::uint64_t v : {0ull, 250ull, 251ull, 0xffffull, 0x10000ull, 0xffffffull, 0x1000000ull,
                          0x123456789abcdefull}) {
    Bytes b;
    lenenc(b, v);
    std::size_t offset = 0;
    EXPECT_EQ(read_lenenc_int(view(b), &offset), v);
    EXPECT_EQ(offset, b.size());
    // Cut anywhere: not there, and the offset stays.
    for (std::size_t cut = 0; cut < b.size(); ++cut) {
      Bytes part(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(cut));
      std::size_t o = 0;
      EXPECT_FALSE(read_lenenc_int(view(part), &o)) << v << " cut at " << cut;
      EXPECT_EQ(o, 0u);
    }
  }
  Bytes invalid = {0xff, 1, 2};
  std::size_t o = 0;
  EXPECT_FALSE(read_lenenc_int(view(invalid), &o));
  Bytes null_marker = {0xfb};
  EXPECT_FALSE(read_lenenc_int(view(null_marker), &o));
}

TEST(MysqlLenenc, AStringThatClaimsMoreThanIsThereIsRefused) {
  Bytes b;
  lenenc(b, 1'000'000);
  text(b, "short");
  std::size_t o = 0;
  EXPECT_FALSE(read_lenenc_string(view(b), &o, 100));
  EXPECT_EQ(o, 0u);
  Bytes huge;
  lenenc(huge, ~0ull);  // 2^64 - 1: no overflow past the end
  text(huge, "abc");
  EXPECT_FALSE(read_lenenc_string(view(huge), &o, 100));
  Bytes good;
  lenenc_text(good, "hello world");
  EXPECT_EQ(read_lenenc_string(view(good), &o, 5), "hello");
  EXPECT_EQ(o, good.size());
}

TEST(MysqlGreeting, MariaDbsGreetingParses) {
  const Bytes g = greeting();
  ASSERT_TRUE(looks_like_greeting(view(g)));
  auto parsed = parse_greeting(view(g));
  ASSERT_TRUE(parsed);
  EXPECT_EQ(parsed->protocol_version, 10);
  EXPECT_EQ(parsed->server_version, "5.5.5-10.11.19-MariaDB-0+deb12u1");
  EXPECT_EQ(parsed->connection_id, 42u);
  EXPECT_EQ(parsed->capabilities, 0xf7feu | (0x81bfu << 16));
  EXPECT_EQ(parsed->charset, 45);
  EXPECT_EQ(parsed->status, 2);
  EXPECT_EQ(parsed->auth_plugin, "mysql_native_password");
  // Cut anywhere after the version started: still a greeting, never a crash.
  for (std::size_t cut = 2; cut < g.size(); ++cut) {
    Bytes part(g.begin(), g.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_TRUE(looks_like_greeting(view(part))) << cut;
    parse_greeting(view(part));
  }
}

TEST(MysqlGreeting, OtherProtocolsAreNotGreetings) {
  for (std::string_view s : {"GET / HTTP/1.1\r\n", "\x16\x03\x01\x02\x00\x01", "+OK\r\n",
                             "SSH-2.0-OpenSSH_9.2\r\n", ""}) {
    Bytes b;
    text(b, s);
    EXPECT_FALSE(looks_like_greeting(view(b))) << s;
  }
  Bytes control = {10, 'a', 0x01, 'b', 0};
  EXPECT_FALSE(looks_like_greeting(view(control)));
  Bytes empty_version = {10, 0, 1, 2, 3, 4};
  EXPECT_FALSE(looks_like_greeting(view(empty_version)));
  Bytes long_version = {10};
  text(long_version, std::string(70, 'v'));
  long_version.push_back(0);
  EXPECT_FALSE(looks_like_greeting(view(long_version)));
  Bytes g = greeting();
  g[0] = 9;  // protocol version 9
  EXPECT_FALSE(looks_like_greeting(view(g)));
  Bytes old = greeting(0xf7fe & ~capability::protocol_41);
  EXPECT_FALSE(looks_like_greeting(view(old)));
}

TEST(MysqlHandshake, UserDatabaseAndCapabilitiesButNeverThePassword) {
  const std::string password = "s3cret-scramble-bytes";
  for (std::uint32_t caps : {kClientCaps, kClientCaps & ~capability::plugin_auth_lenenc_data}) {
    const Bytes b = handshake_response(caps, "app", password, "shop");
    ASSERT_TRUE(looks_like_handshake_response(view(b), b.size()));
    auto r = parse_handshake_response(view(b), b.size());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->capabilities, caps);
    EXPECT_EQ(r->max_packet, 16u * 1024 * 1024);
    EXPECT_EQ(r->mariadb_capabilities, 0x1du);
    EXPECT_FALSE(r->ssl_request);
    EXPECT_EQ(r->user, "app");
    EXPECT_EQ(r->database, "shop");
    EXPECT_EQ(r->auth_plugin, "mysql_native_password");
    for (const std::string* s : {&r->user, &r->database, &r->auth_plugin})
      EXPECT_EQ(s->find("s3cret"), std::string::npos);
  }
  // Without CLIENT_CONNECT_WITH_DB: no database.
  const Bytes no_db = handshake_response(kClientCaps & ~capability::connect_with_db, "u", "p", "");
  EXPECT_EQ(parse_handshake_response(view(no_db), no_db.size())->database, "");
}

TEST(MysqlHandshake, AnSslRequestIsTheFirst32BytesAlone) {
  Bytes b = handshake_response(kClientCaps | capability::ssl, "app", "pw", "shop");
  b.resize(32);
  ASSERT_TRUE(looks_like_handshake_response(view(b), 32));
  auto r = parse_handshake_response(view(b), 32);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ssl_request);
  EXPECT_EQ(r->user, "");
  // 32 bytes without CLIENT_SSL are not a handshake.
  Bytes plain = handshake_response(kClientCaps, "app", "pw", "shop");
  plain.resize(32);
  EXPECT_FALSE(looks_like_handshake_response(view(plain), 32));
}

TEST(MysqlHandshake, NonZeroFillerOrNoProtocol41IsNotAHandshake) {
  Bytes b = handshake_response(kClientCaps, "app", "pw", "shop");
  Bytes filler = b;
  filler[12] = 1;
  EXPECT_FALSE(looks_like_handshake_response(view(filler), filler.size()));
  Bytes old = handshake_response(kClientCaps & ~capability::protocol_41, "app", "pw", "shop");
  EXPECT_FALSE(looks_like_handshake_response(view(old), old.size()));
  Bytes http;
  text(http, "POST /x HTTP/1.1\r\nHost: example.com\r\n\r\n");
  EXPECT_FALSE(looks_like_handshake_response(view(http), http.size()));
  // A user name the capture cut: what came is kept, nothing read past it.
  Bytes cut(b.begin(), b.begin() + 34);
  auto r = parse_handshake_response(view(cut), b.size());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->user, "");
}

TEST(MysqlCommand, QueriesAndStatementIdsAndBounds) {
  Bytes q = {com_query};
  text(q, "SELECT 1");
  auto c = parse_command(view(q), q.size(), 100);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->command, com_query);
  EXPECT_EQ(c->text, "SELECT 1");
  EXPECT_FALSE(c->text_cut);
  auto bounded = parse_command(view(q), q.size(), 6);
  EXPECT_EQ(bounded->text, "SELECT");
  EXPECT_TRUE(bounded->text_cut);
  // Captured only in part: cut as well.
  auto captured = parse_command(view(q), q.size() + 100, 100);
  EXPECT_TRUE(captured->text_cut);
  // Control bytes are made harmless; a cut does not split a UTF-8 character.
  Bytes u = {com_query};
  text(u, "SELECT '\xc3\xa9\x01'");
  EXPECT_EQ(parse_command(view(u), u.size(), 100)->text, "SELECT '\xc3\xa9?'");
  EXPECT_EQ(parse_command(view(u), u.size(), 9)->text, "SELECT '");

  Bytes exec = {com_stmt_execute};
  le32(exec, 7);
  append(exec, {0, 1, 0, 0, 0});
  EXPECT_EQ(parse_command(view(exec), exec.size(), 100)->statement_id, 7u);
  Bytes close = {com_stmt_close};
  le32(close, 0x01020304);
  EXPECT_EQ(parse_command(view(close), close.size(), 100)->statement_id, 0x01020304u);
  Bytes short_close = {com_stmt_close, 1, 2};
  EXPECT_FALSE(parse_command(view(short_close), 5, 100)->statement_id);
  Bytes init = {com_init_db};
  text(init, "shop");
  EXPECT_EQ(parse_command(view(init), init.size(), 100)->text, "shop");
  Bytes change = {com_change_user};
  nul_text(change, "other");
  change.push_back(3);
  text(change, "pwd");
  nul_text(change, "otherdb");
  auto cu = parse_command(view(change), change.size(), 100);
  EXPECT_EQ(cu->user, "other");
  EXPECT_EQ(cu->database, "otherdb");
  EXPECT_FALSE(parse_command({}, 0, 100));
}

TEST(MysqlCommand, NamesAndWhichCommandsAreAnswered) {
  EXPECT_EQ(command_name(com_query), "COM_QUERY");
  EXPECT_EQ(command_name(com_stmt_prepare), "COM_STMT_PREPARE");
  EXPECT_EQ(command_name(com_stmt_execute), "COM_STMT_EXECUTE");
  EXPECT_EQ(command_name(com_stmt_close), "COM_STMT_CLOSE");
  EXPECT_EQ(command_name(com_reset_connection), "COM_RESET_CONNECTION");
  EXPECT_EQ(command_name(0x42), "COM_0x42");
  EXPECT_FALSE(command_has_response(com_quit));
  EXPECT_FALSE(command_has_response(com_stmt_close));
  EXPECT_FALSE(command_has_response(com_stmt_send_long_data));
  EXPECT_TRUE(command_has_response(com_ping));
  EXPECT_TRUE(command_has_response(com_stmt_execute));
}

TEST(MysqlCommand, UseStatements) {
  EXPECT_EQ(use_statement_database("USE shop"), "shop");
  EXPECT_EQ(use_statement_database("  use `my db`;  "), "my db");
  EXPECT_EQ(use_statement_database("Use\tshop;"), "shop");
  EXPECT_EQ(use_statement_database("/* back */ USE shop"), "shop");
  EXPECT_FALSE(use_statement_database("/* USE shop"));
  EXPECT_FALSE(use_statement_database("USER shop"));
  EXPECT_FALSE(use_statement_database("SELECT 1"));
  EXPECT_FALSE(use_statement_database("USE a b"));
  EXPECT_FALSE(use_statement_database("USE "));
}

TEST(MysqlCommand, NormalizedStatementsHaveNoLiterals) {
  EXPECT_EQ(normalize_statement("SELECT * FROM t1 WHERE id = 42 AND name = 'x''y'", 100),
            "SELECT * FROM t1 WHERE id = ? AND name = ?");
  EXPECT_EQ(normalize_statement("INSERT INTO `t 2` VALUES (1.5, \"a\\\"b\", 0x1f, -3)", 100),
            "INSERT INTO `t 2` VALUES (?, ?, ?, -?)");
  EXPECT_EQ(normalize_statement("  SELECT\n\t1 /* why */ FROM  dual  ", 100), "SELECT ? FROM dual");
  EXPECT_EQ(normalize_statement("SELECT c FROM sbtest1 WHERE id=?", 100),
            "SELECT c FROM sbtest1 WHERE id=?");
  EXPECT_EQ(normalize_statement("SELECT 'unterminated", 100), "SELECT ?");
  EXPECT_EQ(normalize_statement("SELECT 123456789", 8), "SELECT ?");
  EXPECT_EQ(normalize_statement("SELECT abcdefgh", 8), "SELECT a");
}

TEST(MysqlPackets, OkErrEofAndPrepareOk) {
  const Bytes ok = ok_body(3, 300, 0x0002, 1);
  auto o = parse_ok(view(ok));
  ASSERT_TRUE(o);
  EXPECT_EQ(o->affected_rows, 3u);
  EXPECT_EQ(o->last_insert_id, 300u);
  EXPECT_EQ(o->status, 2);
  EXPECT_EQ(o->warnings, 1);
  const Bytes err = err_body(1064, "42000", "You have an error in your SQL syntax");
  auto e = parse_err(view(err), 11);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, 1064);
  EXPECT_EQ(e->sql_state, "42000");
  EXPECT_EQ(e->message, "You have an");
  auto no_state = parse_err(view(err_body(1040, "", "Too many connections")), 100);
  EXPECT_EQ(no_state->sql_state, "");
  EXPECT_EQ(no_state->message, "Too many connections");
  auto eof = parse_eof(view(eof_body(0x22, 4)));
  EXPECT_EQ(eof->status, 0x22);
  EXPECT_EQ(eof->warnings, 4);
  Bytes prep = {0};
  le32(prep, 9);
  le16(prep, 2);
  le16(prep, 1);
  prep.push_back(0);
  le16(prep, 0);
  auto p = parse_prepare_ok(view(prep));
  EXPECT_EQ(p->statement_id, 9u);
  EXPECT_EQ(p->columns, 2);
  EXPECT_EQ(p->params, 1);
  // Cut packets are refused, not read past.
  for (const Bytes* b : {&ok, &err}) {
    Bytes cut(b->begin(), b->begin() + 2);
    EXPECT_FALSE(parse_ok(view(cut)));
    EXPECT_FALSE(parse_err(view(cut), 10));
  }
}

TEST(MysqlResponse, OkAndError) {
  ResponseReader ok(com_query, kClientCaps);
  EXPECT_EQ(feed_all(ok, {ok_body(2, 17)}), 1u);
  EXPECT_EQ(ok.result().status, ResponseReader::Status::ok);
  EXPECT_EQ(ok.result().affected_rows, 2u);
  EXPECT_EQ(ok.result().last_insert_id, 17u);
  ResponseReader err(com_query, kClientCaps);
  EXPECT_EQ(feed_all(err, {err_body(1062, "23000", "Duplicate entry '1' for key 'PRIMARY'")}), 1u);
  EXPECT_EQ(err.result().status, ResponseReader::Status::error);
  EXPECT_EQ(err.result().error->code, 1062);
  EXPECT_EQ(err.result().error->sql_state, "23000");
  // MariaDB's progress reports (code 0xffff) come before the real answer.
  ResponseReader progress(com_query, kClientCaps);
  EXPECT_EQ(feed_all(progress, {err_body(0xffff, "", "\x01\x01\x02"), ok_body(5, 0)}), 2u);
  EXPECT_EQ(progress.result().status, ResponseReader::Status::ok);
  EXPECT_EQ(progress.result().affected_rows, 5u);
}

TEST(MysqlResponse, ResultSetsWithAndWithoutDeprecateEof) {
  for (bool deprecate : {false, true}) {
    SCOPED_TRACE(deprecate);
    const std::uint32_t caps = deprecate ? kClientCaps | capability::deprecate_eof : kClientCaps;
    for (std::size_t rows : {0u, 1u, 3u}) {
      ResponseReader r(com_query, caps);
      auto packets = result_set(2, rows, deprecate);
      EXPECT_EQ(feed_all(r, packets), packets.size()) << rows;
      EXPECT_EQ(r.result().status, ResponseReader::Status::resultset);
      EXPECT_EQ(r.result().rows, rows);
      EXPECT_EQ(r.result().columns, 2u);
      EXPECT_EQ(r.result().warnings, 1u);
      EXPECT_EQ(r.malformed(), 0u);
    }
  }
}

TEST(MysqlResponse, BinaryRowsOfAnExecuteAndAnErrorMidResultSet) {
  ResponseReader r(com_stmt_execute, kClientCaps | capability::deprecate_eof);
  std::vector<Bytes> packets = {count_body(1), column_def("k")};
  for (int i = 0; i < 4; ++i) packets.push_back({0x00, 0x00, std::uint8_t(i), 0, 0, 0});
  packets.push_back(ok_body(0, 0, 2, 0, 0xfe));
  EXPECT_EQ(feed_all(r, packets), packets.size());
  EXPECT_EQ(r.result().rows, 4u);
  ResponseReader broken(com_query, kClientCaps);
  EXPECT_EQ(feed_all(broken, {count_body(1), column_def("a"), eof_body(), text_row({"1"}),
                              err_body(1317, "70100", "Query execution was interrupted")}),
            5u);
  EXPECT_EQ(broken.result().status, ResponseReader::Status::error);
  EXPECT_EQ(broken.result().error->code, 1317);
}

TEST(MysqlResponse, MultipleResultsEndWithTheLastOne) {
  // CALL p(): two result sets, then the procedure's OK.
  std::vector<Bytes> packets = result_set(1, 2, false, 0x000a);
  for (auto& p : result_set(2, 3, false, 0x000a)) packets.push_back(p);
  packets.push_back(ok_body(0, 0, 0x0002));
  ResponseReader r(com_query, kClientCaps);
  EXPECT_EQ(feed_all(r, packets), packets.size());
  EXPECT_EQ(r.result().status, ResponseReader::Status::resultset);
  EXPECT_EQ(r.result().rows, 5u);
  // "INSERT ...; INSERT ...": two OKs, affected rows summed.
  ResponseReader two(com_query, kClientCaps);
  EXPECT_EQ(feed_all(two, {ok_body(1, 10, 0x000a), ok_body(2, 12, 0x0002)}), 2u);
  EXPECT_EQ(two.result().affected_rows, 3u);
  EXPECT_EQ(two.result().last_insert_id, 12u);
  EXPECT_EQ(two.result().status, ResponseReader::Status::ok);
}

TEST(MysqlResponse, PrepareOkWithItsDefinitions) {
  Bytes prep = {0};
  le32(prep, 5);
  le16(prep, 2);  // columns
  le16(prep, 1);  // params
  append(prep, {0, 0, 0});
  for (bool deprecate : {false, true}) {
    SCOPED_TRACE(deprecate);
    std::vector<Bytes> packets = {prep, column_def("?")};
    if (!deprecate) packets.push_back(eof_body());
    packets.push_back(column_def("a"));
    packets.push_back(column_def("b"));
    if (!deprecate) packets.push_back(eof_body());
    ResponseReader r(com_stmt_prepare,
                     deprecate ? kClientCaps | capability::deprecate_eof : kClientCaps);
    EXPECT_EQ(feed_all(r, packets), packets.size());
    ASSERT_TRUE(r.result().prepared);
    EXPECT_EQ(r.result().prepared->statement_id, 5u);
    EXPECT_EQ(r.result().status, ResponseReader::Status::ok);
  }
  Bytes bare = {0};
  le32(bare, 6);
  append(bare, {0, 0, 0, 0, 0, 0, 0});
  ResponseReader r(com_stmt_prepare, kClientCaps);
  EXPECT_EQ(feed_all(r, {bare}), 1u);
  EXPECT_EQ(r.result().prepared->statement_id, 6u);
}

TEST(MysqlResponse, OtherShapes) {
  ResponseReader stats(com_statistics, kClientCaps);
  Bytes s;
  text(s, "Uptime: 5  Threads: 1");
  EXPECT_EQ(feed_all(stats, {s}), 1u);
  EXPECT_EQ(stats.result().status, ResponseReader::Status::ok);
  ResponseReader option(com_set_option, kClientCaps);
  EXPECT_EQ(feed_all(option, {eof_body()}), 1u);
  // LOAD DATA LOCAL: 0xfb, then (after the client's file) the OK.
  ResponseReader infile(com_query, kClientCaps);
  Bytes request = {0xfb};
  text(request, "/tmp/f.csv");
  EXPECT_EQ(feed_all(infile, {request, ok_body(10, 0)}), 2u);
  EXPECT_EQ(infile.result().affected_rows, 10u);
  // A cursor: definitions, and an EOF saying the rows come with FETCH.
  ResponseReader cursor(com_stmt_execute, kClientCaps);
  EXPECT_EQ(feed_all(cursor, {count_body(1), column_def("a"), eof_body(0x0042)}), 3u);
  EXPECT_EQ(cursor.result().rows, 0u);
  ResponseReader fetch(com_stmt_fetch, kClientCaps);
  EXPECT_EQ(feed_all(fetch, {{0, 0, 1}, {0, 0, 2}, eof_body(0x0042)}), 3u);
  EXPECT_EQ(fetch.result().rows, 2u);
  // MariaDB's cached metadata: the count says none follow.
  ResponseReader cached(com_stmt_execute, kClientCaps | capability::deprecate_eof);
  EXPECT_EQ(feed_all(cached, {{1, 0}, {0, 0, 7}, ok_body(0, 0, 2, 0, 0xfe)}), 3u);
  EXPECT_EQ(cached.result().rows, 1u);
  // COM_CHANGE_USER: an auth switch, then the OK.
  ResponseReader change(com_change_user, kClientCaps);
  Bytes auth_switch = {0xfe};
  nul_text(auth_switch, "mysql_native_password");
  text(auth_switch, "0123456789abcdefghij");
  auth_switch.push_back(0);
  EXPECT_EQ(feed_all(change, {auth_switch, ok_body(0, 0)}), 2u);
  EXPECT_EQ(change.result().status, ResponseReader::Status::ok);
}

// The stream the plugin reads: packets split over segments, several in one,
// sequence ids wrapping past 255, and a packet longer than the capture.
TEST(MysqlFraming, ResultSetOverSegmentsWithSequenceWrapAndAnOversizedRow) {
  Bytes wire;
  std::uint8_t seq = 1;
  const auto packets = result_set(2, 300, true);
  for (std::size_t i = 0; i < packets.size(); ++i) {
    Bytes body = packets[i];
    if (i == 10) {
      // A row of 3000 bytes, of which the capture keeps only some.
      body = text_row({std::string(3000, 'z'), "y"});
    }
    auto p = packet(seq++, body);  // wraps from 255 to 0
    wire.insert(wire.end(), p.begin(), p.end());
  }
  ResponseReader r(com_query, kClientCaps | capability::deprecate_eof);
  LengthPrefixedStream stream(LengthPrefix::mysql());
  std::size_t messages = 0, done_at = 0;
  bool done = false;
  // Segment boundaries every 97 bytes (many packets span two), except that
  // the big row starts a segment of its own, of which the capture keeps 512
  // bytes: the stream must skip the rest by the packet's length.
  std::size_t big_start = 0;
  for (std::size_t i = 0; i < 10; ++i) big_start += 4 + packets[i].size();
  const std::size_t big_size = 4 + text_row({std::string(3000, 'z'), "y"}).size();
  std::uint32_t tcp_seq = 1000;
  std::size_t offset = 0;
  while (offset < wire.size()) {
    std::size_t size = std::min<std::size_t>(97, wire.size() - offset);
    if (offset < big_start && offset + size > big_start) size = big_start - offset;
    std::size_t captured = size;
    if (offset == big_start) {
      size = big_size;
      captured = 512;
    }
    std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(wire.data() + offset),
                                     captured);
    stream.feed(tcp_seq, static_cast<std::uint32_t>(size), bytes, 0, [&](const FramedMessage& m) {
      ++messages;
      if (!done && r.feed(m.body, m.body_length)) {
        done = true;
        done_at = messages;
      }
    });
    tcp_seq += static_cast<std::uint32_t>(size);
    offset += size;
  }
  EXPECT_TRUE(done);
  EXPECT_EQ(done_at, packets.size());
  EXPECT_EQ(r.result().rows, 300u);
  EXPECT_EQ(stream.stats().lost_sync, 0u);
  EXPECT_EQ(stream.stats().cut, 1u);
  EXPECT_GT(packets.size(), 256u) << "the sequence id wrapped";
}

// Any bytes at all, as any response: no crash, and a reader that finished
// stays finished.
TEST(MysqlResponse, GarbageIsHarmless) {
  std::mt19937 random(18);
  for (int round = 0; round < 2000; ++round) {
    ResponseReader r(static_cast<std::uint8_t>(random() % 0x20), random() & 1 ? kClientCaps : 0);
    for (int i = 0; i < 20; ++i) {
      Bytes body(random() % 40);
      for (auto& b : body) b = std::uint8_t(random());
      const bool was_done = r.done();
      const bool done = r.feed(view(body), body.size() + random() % 3 * 1000);
      if (was_done) {
        EXPECT_TRUE(done);
      }
      parse_command(view(body), body.size(), 16, kClientCaps | 0x08000000);
      parse_greeting(view(body));
      parse_handshake_response(view(body), body.size());
    }
  }
}

}  // namespace
