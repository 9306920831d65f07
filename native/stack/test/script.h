// A packetdrill-like script runner (after Demikernel's *.pkt regressions): a
// script drives one stack from the peer's side and fails if the stack sends
// anything the script did not expect, or misses something it did.
//
//   +<ms> <statement>        time is relative to the previous line
//
// Statements:
//   listen | connect | accept | write <n> | read <n> (exactly n) | shutdown | close |
//   abort | nodelay | event <Connected|Readable|PeerClosed|Error|Closed|...>
//   < <flags> <seq>:<end>(<len>) [ack <n>] [win <n>] [<opt,...>]   peer sends
//   > <flags> <seq>:<end>(<len>) [ack <n>] [win <n>] [<opt,...>]   stack must send
//
// Flags: S F R P and '.' for ACK. Sequence numbers are relative to each
// side's ISN (the peer's is 0; the stack's is learned from its first SYN).
// Options: mss N, wscale N, sackOK, TS val N ecr N, sack L:R; on '>' lines
// only the options listed are checked, and 'TS' alone checks presence.
// The stack is 10.0.0.1 (port 80 when listening, 40000 when connecting); the
// peer is 10.0.0.2 (port 5000, or 80 when the stack connects).
#pragma once

#include <cstdio>
#include <sstream>
#include <string>

#include "harness.h"

namespace sidestep::stack::test {

class Script {
 public:
  explicit Script(const Config& c = test_config()) : rig_(c) {}

  // Runs the script; returns an empty string or a description of the first
  // mismatch (with its line number).
  std::string run(const std::string& text) {
    std::istringstream in(text);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      ++n;
      auto hash = line.find('#');
      if (hash != std::string::npos) line.resize(hash);
      std::istringstream ls(line);
      std::string time;
      if (!(ls >> time)) continue;
      std::string err = step(time, ls);
      if (!err.empty()) return "line " + std::to_string(n) + ": " + err + " [" + line + "]";
    }
    collect();
    if (!pending_.empty()) return "unexpected trailing segment: " + describe(pending_[0]);
    return "";
  }

  Rig& rig() { return rig_; }

 private:
  static constexpr uint32_t kPeerIsn = 1000;
  Rig rig_;
  Endpoint local_ = ep4(1, 80), peer_ = ep4(2, 5000);
  SocketId listener_ = 0, sock_ = 0;
  uint32_t stack_isn_ = 0;
  bool have_isn_ = false;
  Micros clock_ = 0;
  std::vector<Parsed> pending_;
  std::vector<Event> events_;

  struct Seg {
    uint8_t flags = 0;
    uint32_t seq = 0, len = 0;
    bool has_ack = false, has_win = false;
    uint32_t ack = 0, win = 0;
    TcpOptions opts;
    bool check_ts = false, check_mss = false, check_ws = false, check_sackok = false;
  };

  std::string step(const std::string& time, std::istringstream& ls) {
    if (time.empty() || time[0] != '+') return "time must be +<ms>";
    clock_ += Micros(std::stod(time.substr(1)) * 1000);
    Micros target = 1000000 + clock_;
    // Fire timers on their own deadlines up to the line's time.
    while (rig_.stack.poll_at() <= target) {
      Micros at = rig_.stack.poll_at();
      rig_.advance_to(std::max(at, rig_.now));
      collect();
    }
    rig_.now = std::max(rig_.now, target);
    std::string word;
    ls >> word;
    if (word == "<") return inbound(ls);
    if (word == ">") return outbound(ls);
    return command(word, ls);
  }

  void collect() {
    for (auto& p : rig_.sent()) pending_.push_back(p);
    for (auto& e : rig_.events()) events_.push_back(e);
  }

  std::string command(const std::string& w, std::istringstream& ls) {
    Micros now = rig_.now;
    Stack& s = rig_.stack;
    if (w == "listen") {
      int l = s.listen(local_, 8, false);
      if (l <= 0) return "listen failed";
      listener_ = SocketId(l);
    } else if (w == "connect") {
      local_ = ep4(1, 40000);
      peer_ = ep4(2, 80);
      int id = s.connect(local_, peer_, 7, now);
      if (id <= 0) return "connect failed";
      sock_ = SocketId(id);
    } else if (w == "accept") {
      int id = s.accept(listener_);
      if (id <= 0) return "accept: " + std::to_string(id);
      sock_ = SocketId(id);
    } else if (w == "write") {
      size_t n = 0;
      ls >> n;
      std::vector<uint8_t> d(n, 'x');
      if (s.send(sock_, d.data(), n, now) != long(n)) return "write failed";
    } else if (w == "read") {
      size_t n = 0;
      ls >> n;
      std::vector<uint8_t> d(n);
      size_t got = s.recv(sock_, d.data(), n, now);
      if (got != n) return "read " + std::to_string(got) + " bytes";
    } else if (w == "shutdown") {
      s.shutdown_write(sock_, now);
    } else if (w == "close") {
      s.close(sock_, now);
    } else if (w == "abort") {
      s.abort(sock_, now);
    } else if (w == "nodelay") {
      s.set_nodelay(sock_, true);
    } else if (w == "event") {
      std::string type;
      ls >> type;
      collect();
      for (size_t i = 0; i < events_.size(); ++i) {
        if (event_name(events_[i].type) == type) {
          events_.erase(events_.begin() + long(i));
          return "";
        }
      }
      return "no " + type + " event";
    } else {
      return "unknown statement '" + w + "'";
    }
    collect();
    return "";
  }

  static std::string event_name(EventType t) {
    switch (t) {
      case EventType::Connected: return "Connected";
      case EventType::Acceptable: return "Acceptable";
      case EventType::Readable: return "Readable";
      case EventType::Writable: return "Writable";
      case EventType::PeerClosed: return "PeerClosed";
      case EventType::Error: return "Error";
      case EventType::Closed: return "Closed";
    }
    return "?";
  }

  static bool parse_seg(std::istringstream& ls, Seg* s) {
    std::string flags, range;
    if (!(ls >> flags >> range)) return false;
    for (char c : flags) {
      switch (c) {
        case 'S': s->flags |= kSyn; break;
        case 'F': s->flags |= kFin; break;
        case 'R': s->flags |= kRst; break;
        case 'P': s->flags |= kPsh; break;
        case '.': s->flags |= kAck; break;
        default: return false;
      }
    }
    unsigned long a = 0, b = 0, len = 0;
    if (std::sscanf(range.c_str(), "%lu:%lu(%lu)", &a, &b, &len) != 3 || b - a != len) return false;
    s->seq = uint32_t(a);
    s->len = uint32_t(len);
    std::string w;
    while (ls >> w) {
      if (w == "ack") {
        ls >> s->ack;
        s->has_ack = true;
      } else if (w == "win") {
        ls >> s->win;
        s->has_win = true;
      } else if (!w.empty() && w[0] == '<') {
        std::string rest = w, more;
        while (rest.back() != '>' && ls >> more) rest += " " + more;
        if (!parse_options(rest.substr(1, rest.size() - 2), s)) return false;
      } else {
        return false;
      }
    }
    return true;
  }

  static bool parse_options(const std::string& text, Seg* s) {
    std::istringstream os(text);
    std::string item;
    while (std::getline(os, item, ',')) {
      std::istringstream is(item);
      std::string name;
      is >> name;
      if (name == "nop" || name.empty()) continue;
      if (name == "mss") {
        is >> s->opts.mss;
        s->check_mss = true;
      } else if (name == "wscale") {
        int v = 0;
        is >> v;
        s->opts.window_scale = int8_t(v);
        s->check_ws = true;
      } else if (name == "sackOK") {
        s->opts.sack_permitted = true;
        s->check_sackok = true;
      } else if (name == "TS") {
        s->opts.has_timestamp = true;
        s->check_ts = true;
        std::string k;
        while (is >> k) {
          if (k == "val") is >> s->opts.ts_val;
          if (k == "ecr") is >> s->opts.ts_ecr;
        }
      } else if (name == "sack") {
        std::string r;
        is >> r;
        unsigned long l = 0, h = 0;
        if (std::sscanf(r.c_str(), "%lu:%lu", &l, &h) != 2 || s->opts.sack_count == 4) return false;
        s->opts.sack[s->opts.sack_count++] = SackBlock{uint32_t(l), uint32_t(h)};
      } else {
        return false;
      }
    }
    return true;
  }

  std::string inbound(std::istringstream& ls) {
    Seg s;
    if (!parse_seg(ls, &s)) return "cannot parse segment";
    TcpOptions o = s.opts;
    for (uint8_t i = 0; i < o.sack_count; ++i) {
      o.sack[i].left += stack_isn_;
      o.sack[i].right += stack_isn_;
    }
    uint32_t ack = s.has_ack ? s.ack + stack_isn_ : 0;
    if (s.has_ack) s.flags |= kAck;
    std::vector<uint8_t> payload(s.len, 'p');
    rig_.feed(build(peer_, local_, kPeerIsn + s.seq, ack, s.flags,
                    uint16_t(s.has_win ? s.win : 65535), o, payload));
    collect();
    return "";
  }

  std::string outbound(std::istringstream& ls) {
    Seg s;
    if (!parse_seg(ls, &s)) return "cannot parse segment";
    collect();
    if (pending_.empty()) return "nothing was sent";
    Parsed p = pending_.front();
    pending_.erase(pending_.begin());
    if (!have_isn_ && p.has(kSyn)) {
      stack_isn_ = p.tcp.seq - s.seq;
      have_isn_ = true;
    }
    std::string got = describe(p);
    if (p.tcp.flags != s.flags) return "flags differ, got " + got;
    if (p.tcp.seq - stack_isn_ != s.seq) return "seq differs, got " + got;
    if (p.payload.size() != s.len) return "length differs, got " + got;
    if (s.has_ack && p.tcp.ack - kPeerIsn != s.ack) return "ack differs, got " + got;
    if (s.has_win && p.tcp.window != s.win) return "window differs, got " + got;
    const TcpOptions& g = p.tcp.options;
    if (s.check_mss && g.mss != s.opts.mss) return "mss differs, got " + got;
    if (s.check_ws && g.window_scale != s.opts.window_scale) return "wscale differs, got " + got;
    if (s.check_sackok && !g.sack_permitted) return "no sackOK, got " + got;
    if (s.check_ts && !g.has_timestamp) return "no timestamp, got " + got;
    if (s.check_ts && s.opts.ts_ecr && g.ts_ecr != s.opts.ts_ecr) return "ts ecr differs, got " + got;
    if (s.opts.sack_count) {
      if (g.sack_count != s.opts.sack_count) return "sack blocks differ, got " + got;
      for (uint8_t i = 0; i < g.sack_count; ++i) {
        if (g.sack[i].left - kPeerIsn != s.opts.sack[i].left ||
            g.sack[i].right - kPeerIsn != s.opts.sack[i].right) {
          return "sack block differs, got " + got;
        }
      }
    }
    return "";
  }

  std::string describe(const Parsed& p) const {
    std::string f;
    if (p.has(kSyn)) f += 'S';
    if (p.has(kFin)) f += 'F';
    if (p.has(kRst)) f += 'R';
    if (p.has(kPsh)) f += 'P';
    if (p.has(kAck)) f += '.';
    uint32_t seq = p.tcp.seq - stack_isn_;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s %u:%u(%zu) ack %u win %u", f.c_str(), seq,
                  seq + uint32_t(p.payload.size()), p.payload.size(), p.tcp.ack - kPeerIsn,
                  p.tcp.window);
    return buf;
  }
};

}  // namespace sidestep::stack::test
