// Runtime (see runtime.h): a dead peer's streams, finished from its send
// arena as Linux finishes the streams of a dead process.
#include "runtime.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sidestep::addon {

void Runtime::AdoptOrphans(uint32_t link, stack::Micros now) {
  // The peer's send memory outlives it: each of its connections with us is
  // finished from there, as Linux finishes the streams of a dead process —
  // unless it left bytes we sent it unread (or still on their way), when
  // Linux resets instead (link_down does, below).
  bool any = false;
  for (const link::PeerArena::Live& l : fabric_->orphans(link)) {
    const link::SlotDescriptor& d = l.descriptor;
    if (d.family != 4 && d.family != 6) continue;
    stack::Endpoint ours, theirs;  // its local is our remote
    ours.addr.family = theirs.addr.family = d.family;
    std::memcpy(ours.addr.bytes, d.remote, 16);
    std::memcpy(theirs.addr.bytes, d.local, 16);
    ours.port = d.remote_port;
    theirs.port = d.local_port;
    const stack::SocketId id = stack_->find(ours, theirs);
    SocketState* st = id ? Find(id) : nullptr;
    stack::SocketInfo info;
    if (!st || st->closed || stack_->link_of(id) != link || !stack_->info(id, &info)) continue;
    const uint32_t owed = d.written_end - info.rcv_nxt;
    // Untrusted: a ring in use that is no power of two or more than the
    // slot, a stream that claims more than its ring holds, or bytes before
    // what we already have, is reset.
    const uint64_t ring = d.ring_bytes;
    if (ring < 4096 || ring > l.capacity || (ring & (ring - 1))) continue;
    if (owed > ring || d.written_end - d.seq_base > (uint32_t(1) << 31) + ring) continue;
    if (d.consumed != info.snd_nxt) continue;  // it had not read everything we sent
    // Bytes it sent in frames only (small writes kept out of its ring) that
    // never reached us: not in its memory either.
    if (int32_t(d.ring_from - info.rcv_nxt) > 0) continue;
    Orphan o;
    o.id = id;
    o.via = link;
    o.ring = l.ring;
    o.capacity = ring;
    o.seq_base = d.seq_base;
    o.end = d.written_end;
    o.progress_at = now;
    stack_->orphan(id, now);
    orphans_.push_back(o);
    any = true;
  }
  if (!any) fabric_->release_orphans(link);
}

bool Runtime::FeedOrphans(stack::Micros now) {
  constexpr size_t kChunk = 256 * 1024;
  bool fed = false;
  for (size_t k = 0; k < orphans_.size();) {
    Orphan& o = orphans_[k];
    stack::SocketInfo info;
    bool done = !stack_->info(o.id, &info);  // freed: the application closed it
    if (!done) {
      const uint32_t at = stack_->receive_point(o.id);
      const uint32_t left = o.end - at;
      if (left > 0 && left <= o.capacity) {
        const size_t len = std::min<size_t>(left, kChunk);
        const size_t pos = (at - o.seq_base) & (o.capacity - 1);
        stack::Payload p;
        p.data[0] = o.ring + pos;
        p.len[0] = std::min<size_t>(len, o.capacity - pos);
        if (p.len[0] < len) {
          p.data[1] = o.ring;
          p.len[1] = len - p.len[0];
        }
        const size_t took = stack_->feed(o.id, p, len == left, now);
        if (took) {
          fed = true;
          o.progress_at = now;
          orphan_bytes_ += took;
          if (took == left) o.fin_fed = true;
        }
      } else if (left == 0 && !o.fin_fed) {
        stack_->feed(o.id, stack::Payload{}, true, now);
        o.fin_fed = fed = true;
      } else if (left > o.capacity) {
        stack_->reset_by_peer(o.id, now);  // the stream went where its memory can't follow
        ++orphans_reset_;
        done = true;
      }
      if (!done && o.fin_fed) {
        ++orphans_finished_;
        done = true;
      } else if (!done && now - o.progress_at > orphan_linger_us_) {
        stack_->reset_by_peer(o.id, now);
        ++orphans_reset_;
        done = true;
      }
    }
    if (done) {
      const uint32_t via = o.via;
      orphans_[k] = orphans_.back();
      orphans_.pop_back();
      if (std::none_of(orphans_.begin(), orphans_.end(), [&](const Orphan& x) { return x.via == via; }))
        fabric_->release_orphans(via);
      continue;
    }
    ++k;
  }
  return fed;
}

}  // namespace sidestep::addon
