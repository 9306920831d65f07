// IPv4 / IPv6 / TCP parse and emit; see wire.h.
#include "wire.h"

#include <cstring>

namespace sidestep::stack::wire {

namespace {

uint64_t add_carry(uint64_t acc, uint64_t v) {
  acc += v;
  return acc + (acc < v);
}

uint16_t fold(uint64_t s) {
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffffffu) + (s >> 32);
  s = (s & 0xffffu) + (s >> 16);
  s = (s & 0xffffu) + (s >> 16);
  return uint16_t(s);
}

// Sum of the pseudo-header (RFC 793 / RFC 8200 8.1), in memory byte order.
uint64_t pseudo_sum(const IpAddr& src, const IpAddr& dst, size_t tcp_len) {
  uint8_t ph[40] = {};
  size_t n;
  if (src.family == 4) {
    std::memcpy(ph, src.bytes, 4);
    std::memcpy(ph + 4, dst.bytes, 4);
    ph[9] = kProtoTcp;
    store16(ph + 10, uint16_t(tcp_len));
    n = 12;
  } else {
    std::memcpy(ph, src.bytes, 16);
    std::memcpy(ph + 16, dst.bytes, 16);
    store32(ph + 32, uint32_t(tcp_len));
    ph[39] = kProtoTcp;
    n = 40;
  }
  uint64_t acc = 0;
  for (size_t i = 0; i < n; i += 4) {
    uint32_t w;
    std::memcpy(&w, ph + i, 4);
    acc += w;
  }
  return acc;
}

}  // namespace

uint16_t ones_sum(const uint8_t* data, size_t len, uint64_t acc) {
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    acc = add_carry(acc, w);
  }
  if (i < len) {
    uint8_t tail[8] = {};
    std::memcpy(tail, data + i, len - i);
    uint64_t w;
    std::memcpy(&w, tail, 8);
    acc = add_carry(acc, w);
  }
  return fold(acc);
}

IpParse parse_ip(const uint8_t* packet, size_t len, bool verify_checksum, IpHeader* out) {
  if (len < 1) return IpParse::Malformed;
  uint8_t h[60];
  size_t copied = len < sizeof h ? len : sizeof h;
  std::memcpy(h, packet, copied);
  uint8_t version = h[0] >> 4;
  if (version == 4) {
    if (copied < kIpv4HeaderLen) return IpParse::Malformed;
    size_t ihl = size_t(h[0] & 0x0f) * 4;
    if (ihl < kIpv4HeaderLen || ihl > copied) return IpParse::Malformed;
    size_t total = load16(h + 2);
    if (total < ihl || total > len) return IpParse::Malformed;
    uint16_t frag = load16(h + 6);
    if ((frag & 0x2000) || (frag & 0x1fff)) return IpParse::Malformed;  // no reassembly
    if (verify_checksum && ones_sum(h, ihl) != 0xffff) return IpParse::Malformed;
    out->src = IpAddr{};
    out->dst = IpAddr{};
    out->src.family = 4;
    out->dst.family = 4;
    std::memcpy(out->src.bytes, h + 12, 4);
    std::memcpy(out->dst.bytes, h + 16, 4);
    out->protocol = h[9];
    out->header_len = ihl;
    out->payload_len = total - ihl;
    return out->protocol == kProtoTcp ? IpParse::Ok : IpParse::NotTcp;
  }
  if (version == 6) {
    if (copied < kIpv6HeaderLen) return IpParse::Malformed;
    size_t payload = load16(h + 4);
    if (kIpv6HeaderLen + payload > len) return IpParse::Malformed;
    out->src.family = 6;
    out->dst.family = 6;
    std::memcpy(out->src.bytes, h + 8, 16);
    std::memcpy(out->dst.bytes, h + 24, 16);
    out->protocol = h[6];
    out->header_len = kIpv6HeaderLen;
    out->payload_len = payload;
    return out->protocol == kProtoTcp ? IpParse::Ok : IpParse::NotTcp;
  }
  return IpParse::Malformed;
}

bool parse_tcp(const uint8_t* segment, size_t len, TcpHeader* out) {
  if (len < kTcpHeaderLen) return false;
  uint8_t h[kTcpHeaderLen + kTcpMaxOptions];
  size_t copied = len < sizeof h ? len : sizeof h;
  std::memcpy(h, segment, copied);
  size_t doff = size_t(h[12] >> 4) * 4;
  if (doff < kTcpHeaderLen || doff > copied) return false;
  out->src_port = load16(h);
  out->dst_port = load16(h + 2);
  out->seq = load32(h + 4);
  out->ack = load32(h + 8);
  out->flags = h[13] & 0x3f;
  out->window = load16(h + 14);
  out->header_len = doff;
  TcpOptions& o = out->options;
  o = TcpOptions{};
  size_t i = kTcpHeaderLen;
  while (i < doff) {
    uint8_t kind = h[i];
    if (kind == 0) break;
    if (kind == 1) {
      ++i;
      continue;
    }
    if (i + 1 >= doff) return false;
    size_t olen = h[i + 1];
    if (olen < 2 || i + olen > doff) return false;
    const uint8_t* v = h + i + 2;
    switch (kind) {
      case 2:
        if (olen != 4) return false;
        o.mss = load16(v);
        break;
      case 3:
        if (olen != 3) return false;
        o.window_scale = int8_t(v[0] > 14 ? 14 : v[0]);
        break;
      case 4:
        if (olen != 2) return false;
        o.sack_permitted = true;
        break;
      case 5: {
        if ((olen - 2) % 8 != 0 || olen < 10) return false;
        size_t n = (olen - 2) / 8;
        if (n > 4) n = 4;
        for (size_t k = 0; k < n; ++k) {
          o.sack[k].left = load32(v + 8 * k);
          o.sack[k].right = load32(v + 8 * k + 4);
        }
        o.sack_count = uint8_t(n);
        break;
      }
      case 8:
        if (olen != 10) return false;
        o.has_timestamp = true;
        o.ts_val = load32(v);
        o.ts_ecr = load32(v + 4);
        break;
      default:
        break;  // unknown options are skipped (RFC 9293 3.1)
    }
    i += olen;
  }
  return true;
}

size_t tcp_options_len(const TcpOptions& o) {
  size_t n = 0;
  if (o.mss) n += 4;
  if (o.sack_permitted || o.has_timestamp) n += (o.has_timestamp ? 12 : 4);
  if (o.window_scale >= 0) n += 4;
  if (o.sack_count) n += 4 + 8 * size_t(o.sack_count);
  return n;
}

size_t ip_header_len(uint8_t family) { return family == 4 ? kIpv4HeaderLen : kIpv6HeaderLen; }

size_t emit_ip(uint8_t* out, const IpAddr& src, const IpAddr& dst, size_t payload_len,
               bool checksum) {
  if (src.family == 4) {
    uint8_t* h = out;
    h[0] = 0x45;
    h[1] = 0;
    store16(h + 2, uint16_t(kIpv4HeaderLen + payload_len));
    store16(h + 4, 0);
    store16(h + 6, 0x4000);  // DF
    h[8] = 64;
    h[9] = kProtoTcp;
    store16(h + 10, 0);
    std::memcpy(h + 12, src.bytes, 4);
    std::memcpy(h + 16, dst.bytes, 4);
    if (checksum) {
      uint16_t c = uint16_t(~ones_sum(h, kIpv4HeaderLen));
      std::memcpy(h + 10, &c, 2);
    }
    return kIpv4HeaderLen;
  }
  uint8_t* h = out;
  store32(h, 0x60000000u);
  store16(h + 4, uint16_t(payload_len));
  h[6] = kProtoTcp;
  h[7] = 64;
  std::memcpy(h + 8, src.bytes, 16);
  std::memcpy(h + 24, dst.bytes, 16);
  return kIpv6HeaderLen;
}

size_t emit_tcp(uint8_t* out, const TcpHeader& th) {
  const TcpOptions& o = th.options;
  size_t hl = kTcpHeaderLen + tcp_options_len(o);
  store16(out, th.src_port);
  store16(out + 2, th.dst_port);
  store32(out + 4, th.seq);
  store32(out + 8, th.ack);
  out[12] = uint8_t((hl / 4) << 4);
  out[13] = th.flags;
  store16(out + 14, th.window);
  store16(out + 16, 0);
  store16(out + 18, 0);
  uint8_t* p = out + kTcpHeaderLen;
  if (o.mss) {
    p[0] = 2;
    p[1] = 4;
    store16(p + 2, o.mss);
    p += 4;
  }
  if (o.has_timestamp) {
    if (o.sack_permitted) {
      p[0] = 4;
      p[1] = 2;
    } else {
      p[0] = 1;
      p[1] = 1;
    }
    p[2] = 8;
    p[3] = 10;
    store32(p + 4, o.ts_val);
    store32(p + 8, o.ts_ecr);
    p += 12;
  } else if (o.sack_permitted) {
    p[0] = 1;
    p[1] = 1;
    p[2] = 4;
    p[3] = 2;
    p += 4;
  }
  if (o.window_scale >= 0) {
    p[0] = 1;
    p[1] = 3;
    p[2] = 3;
    p[3] = uint8_t(o.window_scale);
    p += 4;
  }
  if (o.sack_count) {
    p[0] = 1;
    p[1] = 1;
    p[2] = 5;
    p[3] = uint8_t(2 + 8 * o.sack_count);
    p += 4;
    for (size_t k = 0; k < o.sack_count; ++k) {
      store32(p, o.sack[k].left);
      store32(p + 4, o.sack[k].right);
      p += 8;
    }
  }
  return hl;
}

void fill_tcp_checksum(uint8_t* segment, size_t len, const IpAddr& src, const IpAddr& dst) {
  segment[16] = 0;
  segment[17] = 0;
  uint16_t c = uint16_t(~ones_sum(segment, len, pseudo_sum(src, dst, len)));
  std::memcpy(segment + 16, &c, 2);
}

bool tcp_checksum_ok(const uint8_t* segment, size_t len, const IpAddr& src, const IpAddr& dst) {
  return ones_sum(segment, len, pseudo_sum(src, dst, len)) == 0xffff;
}

}  // namespace sidestep::stack::wire
