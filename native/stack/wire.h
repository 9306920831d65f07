// Wire formats: IPv4, IPv6 and TCP headers (with options) parsed into plain
// structs and emitted back, plus the Internet checksum. No state machine here
// (smoltcp's src/wire): the parser copies every header out of the (untrusted,
// possibly concurrently changing) packet into local memory before it looks at
// a single field, and it validates every length and option against that copy.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stack.h"

namespace sidestep::stack::wire {

inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kRst = 0x04;
inline constexpr uint8_t kPsh = 0x08;
inline constexpr uint8_t kAck = 0x10;
inline constexpr uint8_t kUrg = 0x20;

inline constexpr uint8_t kProtoTcp = 6;
inline constexpr size_t kIpv4HeaderLen = 20;
inline constexpr size_t kIpv6HeaderLen = 40;
inline constexpr size_t kTcpHeaderLen = 20;
inline constexpr size_t kTcpMaxOptions = 40;

struct IpHeader {
  IpAddr src, dst;
  uint8_t protocol = 0;
  size_t header_len = 0;   // bytes before the transport header
  size_t payload_len = 0;  // transport bytes (from the IP length field)
};

enum class IpParse { Ok, Malformed, NotTcp };

// Parses the IP header at the front of `packet`; trailing link padding beyond
// the IP length is ignored. IPv4 fragments and IPv6 extension headers are not
// supported (NotTcp / Malformed). When `verify_checksum`, a bad IPv4 header
// checksum is Malformed.
IpParse parse_ip(const uint8_t* packet, size_t len, bool verify_checksum, IpHeader* out);

struct SackBlock {
  uint32_t left = 0, right = 0;
};

struct TcpOptions {
  uint16_t mss = 0;            // 0 = absent
  int8_t window_scale = -1;    // -1 = absent; clamped to 14 on parse
  bool sack_permitted = false;
  bool has_timestamp = false;
  uint32_t ts_val = 0, ts_ecr = 0;
  uint8_t sack_count = 0;
  SackBlock sack[4];
};

struct TcpHeader {
  uint16_t src_port = 0, dst_port = 0;
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0;
  uint16_t window = 0;
  size_t header_len = kTcpHeaderLen;  // set by parse/emit
  TcpOptions options;
};

// Parses the TCP header of a segment of `len` bytes (header + payload).
bool parse_tcp(const uint8_t* segment, size_t len, TcpHeader* out);

// Bytes the options of `h` take on the wire (padded to 4).
size_t tcp_options_len(const TcpOptions& o);

// Writes an IP header for `payload_len` transport bytes; returns its length.
size_t ip_header_len(uint8_t family);
size_t emit_ip(uint8_t* out, const IpAddr& src, const IpAddr& dst, size_t payload_len,
               bool checksum);
// Writes the TCP header with options (checksum field zeroed); returns its length.
size_t emit_tcp(uint8_t* out, const TcpHeader& h);
// Fills the TCP checksum of the segment at `segment` (header + payload).
void fill_tcp_checksum(uint8_t* segment, size_t len, const IpAddr& src, const IpAddr& dst);
bool tcp_checksum_ok(const uint8_t* segment, size_t len, const IpAddr& src, const IpAddr& dst);

// RFC 1071 one's complement sum of `len` bytes, folded to 16 bits, in memory
// byte order (store it with memcpy, do not byte-swap).
uint16_t ones_sum(const uint8_t* data, size_t len, uint64_t initial = 0);

inline uint16_t load16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t load32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline void store16(uint8_t* p, uint16_t v) {
  p[0] = uint8_t(v >> 8);
  p[1] = uint8_t(v);
}
inline void store32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

}  // namespace sidestep::stack::wire
