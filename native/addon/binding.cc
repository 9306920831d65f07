// The Node-API surface of sidestep: thin functions over the per-environment
// Runtime. Arguments are validated by the TypeScript layer; here they are only
// converted. Failures come back as negative errno numbers (no C++ exceptions,
// no JS exceptions on the data path); shim/ turns them into Node-shaped errors.
#include <arpa/inet.h>
#include <napi.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "link/control.h"
#include "runtime.h"

namespace sidestep::addon {
namespace {

Runtime* Rt(const Napi::CallbackInfo& info) { return info.Env().GetInstanceData<Runtime>(); }

uint32_t U32(const Napi::CallbackInfo& info, size_t i) { return info[i].As<Napi::Number>().Uint32Value(); }

bool ParseAddr(const Napi::Value& v, stack::IpAddr* out) {
  if (!v.IsString()) return false;
  std::string s = v.As<Napi::String>().Utf8Value();
  *out = stack::IpAddr{};
  if (inet_pton(AF_INET, s.c_str(), out->bytes) == 1) {
    out->family = 4;
    return true;
  }
  // Strip an IPv6 zone ("fe80::1%eth0"): the fabric has no scopes.
  auto pct = s.find('%');
  if (pct != std::string::npos) s.resize(pct);
  if (inet_pton(AF_INET6, s.c_str(), out->bytes) == 1) {
    out->family = 6;
    return true;
  }
  return false;
}

Napi::Value AddrToJs(Napi::Env env, const stack::Endpoint& ep) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(ep.addr.family == 4 ? AF_INET : AF_INET6, ep.addr.bytes, buf, sizeof buf);
  Napi::Array a = Napi::Array::New(env, 3);
  a.Set(0u, Napi::Number::New(env, ep.addr.family));
  a.Set(1u, Napi::String::New(env, buf));
  a.Set(2u, Napi::Number::New(env, ep.port));
  return a;
}

uint32_t OptU32(Napi::Object o, const char* k, uint32_t dflt) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : dflt;
}

// attach(config, onEvent) -> 0, or a negative errno with .why set on config
Napi::Value Attach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object cfg = info[0].As<Napi::Object>();
  RuntimeConfig rc;
  rc.fabric.name = cfg.Get("fabric").As<Napi::String>().Utf8Value();
  rc.fabric.ring_bytes = OptU32(cfg, "ringBytes", rc.fabric.ring_bytes);
  rc.fabric.mtu = OptU32(cfg, "mtu", rc.fabric.mtu);
  rc.fabric.same_uid_only = cfg.Get("sameUidOnly").ToBoolean();
  rc.stack.recv_buffer = OptU32(cfg, "recvBuffer", rc.stack.recv_buffer);
  rc.stack.send_buffer = OptU32(cfg, "sendBuffer", rc.stack.send_buffer);
  rc.stack.time_wait = static_cast<stack::Micros>(OptU32(cfg, "timeWaitMs", 1000)) * 1000;
  rc.stack.rto_min = static_cast<stack::Micros>(OptU32(cfg, "rtoMinMs", 200)) * 1000;
  rc.spin_us = OptU32(cfg, "spinUs", 0);
  rc.ticks_in_js = cfg.Get("ticksInJs").ToBoolean();
  rc.orphan_linger_us = uint64_t(OptU32(cfg, "orphanLingerMs", 60000)) * 1000;
  Napi::Value faults = cfg.Get("faults");
  if (faults.IsObject()) {
    Napi::Object f = faults.As<Napi::Object>();
    auto num = [&](const char* k) {
      Napi::Value v = f.Get(k);
      return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0.0;
    };
    rc.faults.loss = num("loss");
    rc.faults.duplicate = num("duplicate");
    rc.faults.reorder = num("reorder");
    rc.faults.delay_us = static_cast<uint32_t>(num("delayUs"));
    rc.faults.seed = static_cast<uint64_t>(num("seed"));
  }
  Napi::Value secret = cfg.Get("isnSecret");
  if (secret.IsBuffer()) {
    auto b = secret.As<Napi::Buffer<uint8_t>>();
    std::memcpy(rc.stack.isn_secret, b.Data(), std::min<size_t>(b.Length(), sizeof rc.stack.isn_secret));
  }
  std::string why;
  int r = Rt(info)->Attach(rc, info[1].As<Napi::Function>(), &why);
  if (r < 0) cfg.Set("why", Napi::String::New(env, why));
  return Napi::Number::New(env, r);
}

Napi::Value Detach(const Napi::CallbackInfo& info) {
  Rt(info)->Detach();
  return info.Env().Undefined();
}

// connect(localAddr, localPort, boundFd, remoteAddr, remotePort, out) -> id,
// or a negative errno with out.why: the reason to use the kernel instead
Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  stack::Endpoint local, remote;
  Napi::Object out = info[5].As<Napi::Object>();
  if (!ParseAddr(info[0], &local.addr) || !ParseAddr(info[3], &remote.addr)) {
    out.Set("why", Napi::String::New(env, "fabric: an address the fabric can't parse"));
    return Napi::Number::New(env, -EINVAL);
  }
  local.port = static_cast<uint16_t>(U32(info, 1));
  remote.port = static_cast<uint16_t>(U32(info, 4));
  std::string why;
  int r = Rt(info)->Connect(local, info[2].As<Napi::Number>().Int32Value(), remote, &why);
  if (r < 0) out.Set("why", Napi::String::New(env, why));
  return Napi::Number::New(env, r);
}

// listen(addr, port, backlog, v6only, kernelFd, out) -> id, or a negative
// errno with out.why
Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  stack::Endpoint local;
  Napi::Object out = info[5].As<Napi::Object>();
  if (!ParseAddr(info[0], &local.addr)) {
    out.Set("why", Napi::String::New(env, "an address the fabric can't parse"));
    return Napi::Number::New(env, -EINVAL);
  }
  local.port = static_cast<uint16_t>(U32(info, 1));
  int backlog = info[2].As<Napi::Number>().Int32Value();
  std::string why;
  int r = Rt(info)->Listen(local, backlog, info[3].ToBoolean(), info[4].As<Napi::Number>().Int32Value(), &why);
  if (r < 0) out.Set("why", Napi::String::New(env, why));
  return Napi::Number::New(env, r);
}

// write(id, uint8array) -> 0 sync, 1 async (wait for kWritable), -errno
Napi::Value Write(const Napi::CallbackInfo& info) {
  auto buf = info[1].As<Napi::Uint8Array>();
  return Napi::Number::New(info.Env(), Rt(info)->Write(U32(info, 0), buf.Data(), buf.ByteLength()));
}

// writev(id, [uint8array...]) -> as write
Napi::Value Writev(const Napi::CallbackInfo& info) {
  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<std::pair<const uint8_t*, size_t>> parts;
  parts.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    auto b = arr.Get(i).As<Napi::Uint8Array>();
    parts.emplace_back(b.Data(), b.ByteLength());
  }
  return Napi::Number::New(info.Env(), Rt(info)->Writev(U32(info, 0), parts));
}

Napi::Value ReadStart(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), Rt(info)->ReadStart(U32(info, 0)));
}
Napi::Value ReadStop(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), Rt(info)->ReadStop(U32(info, 0)));
}
Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), Rt(info)->Shutdown(U32(info, 0)));
}
Napi::Value Close(const Napi::CallbackInfo& info) {
  Rt(info)->Close(U32(info, 0));
  return info.Env().Undefined();
}
Napi::Value ArmClosePhase(const Napi::CallbackInfo& info) {
  Rt(info)->ArmClosePhase();
  return info.Env().Undefined();
}
Napi::Value Reset(const Napi::CallbackInfo& info) {
  Rt(info)->Reset(U32(info, 0));
  return info.Env().Undefined();
}
Napi::Value Queued(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Rt(info)->Queued(U32(info, 0))));
}
Napi::Value SetNoDelay(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), Rt(info)->SetNoDelay(U32(info, 0), info[1].ToBoolean()));
}
Napi::Value SetKeepAlive(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), Rt(info)->SetKeepAlive(U32(info, 0), info[1].ToBoolean(), U32(info, 2)));
}
Napi::Value Ref(const Napi::CallbackInfo& info) {
  Rt(info)->Ref(U32(info, 0), info[1].ToBoolean());
  return info.Env().Undefined();
}
// endpoint(id, local) -> [family, address, port] or undefined
Napi::Value Endpoint(const Napi::CallbackInfo& info) {
  stack::Endpoint ep;
  if (!Rt(info)->Endpoints(U32(info, 0), info[1].ToBoolean(), &ep)) return info.Env().Undefined();
  return AddrToJs(info.Env(), ep);
}
Napi::Value Stats(const Napi::CallbackInfo& info) { return Rt(info)->Stats(info.Env()); }

// setCapture(on): copy every packet this stack sends or receives to JS
Napi::Value SetCapture(const Napi::CallbackInfo& info) {
  Rt(info)->SetCapture(info[0].ToBoolean());
  return info.Env().Undefined();
}
Napi::Value Pairs(const Napi::CallbackInfo& info) { return Rt(info)->Pairs(info.Env()); }

// unixListen(name) / unixConnect(name) -> fd or -errno: a stream socket at an
// abstract unix name of exactly that length (Node pads abstract names to the
// whole sun_path in some versions and not in others; inspection must meet
// across versions)
Napi::Value UnixListen(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), link::control_listen(info[0].As<Napi::String>().Utf8Value(), SOCK_STREAM));
}
Napi::Value UnixConnect(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), link::control_connect(info[0].As<Napi::String>().Utf8Value(), SOCK_STREAM));
}

// peerCred(fd) -> [pid, uid] of the process at the other end of a unix
// socket (the inspection server's callers), or undefined
Napi::Value PeerCred(const Napi::CallbackInfo& info) {
  link::PeerCred c;
  if (link::peer_cred(info[0].As<Napi::Number>().Int32Value(), &c) != 0) return info.Env().Undefined();
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(0u, Napi::Number::New(info.Env(), c.pid));
  a.Set(1u, Napi::Number::New(info.Env(), c.uid));
  return a;
}
Napi::Value Connections(const Napi::CallbackInfo& info) { return Rt(info)->Connections(info.Env()); }

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // One Runtime per environment (main thread or worker): no static globals.
  auto* rt = new Runtime(env);
  env.SetInstanceData<Runtime>(rt);
  exports.Set("attach", Napi::Function::New(env, Attach, "attach"));
  exports.Set("detach", Napi::Function::New(env, Detach, "detach"));
  exports.Set("connect", Napi::Function::New(env, Connect, "connect"));
  exports.Set("listen", Napi::Function::New(env, Listen, "listen"));
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("writev", Napi::Function::New(env, Writev, "writev"));
  exports.Set("readStart", Napi::Function::New(env, ReadStart, "readStart"));
  exports.Set("readStop", Napi::Function::New(env, ReadStop, "readStop"));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown, "shutdown"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("reset", Napi::Function::New(env, Reset, "reset"));
  exports.Set("armClosePhase", Napi::Function::New(env, ArmClosePhase, "armClosePhase"));
  exports.Set("setNoDelay", Napi::Function::New(env, SetNoDelay, "setNoDelay"));
  exports.Set("queued", Napi::Function::New(env, Queued, "queued"));
  exports.Set("setKeepAlive", Napi::Function::New(env, SetKeepAlive, "setKeepAlive"));
  exports.Set("ref", Napi::Function::New(env, Ref, "ref"));
  exports.Set("endpoint", Napi::Function::New(env, Endpoint, "endpoint"));
  exports.Set("stats", Napi::Function::New(env, Stats, "stats"));
  exports.Set("setCapture", Napi::Function::New(env, SetCapture, "setCapture"));
  exports.Set("pairs", Napi::Function::New(env, Pairs, "pairs"));
  exports.Set("peerCred", Napi::Function::New(env, PeerCred, "peerCred"));
  exports.Set("unixListen", Napi::Function::New(env, UnixListen, "unixListen"));
  exports.Set("unixConnect", Napi::Function::New(env, UnixConnect, "unixConnect"));
  exports.Set("connections", Napi::Function::New(env, Connections, "connections"));
  return exports;
}

}  // namespace sidestep::addon

static Napi::Object InitSidestep(Napi::Env env, Napi::Object exports) {
  return sidestep::addon::Init(env, exports);
}

NODE_API_MODULE(sidestep, InitSidestep)
