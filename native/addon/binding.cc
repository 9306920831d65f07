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
  if (cfg.Get("command").IsString()) rc.fabric.command = cfg.Get("command").As<Napi::String>().Utf8Value();
  if (cfg.Get("eventfdDoorbells").IsBoolean())
    rc.fabric.eventfd_doorbells = cfg.Get("eventfdDoorbells").As<Napi::Boolean>().Value();
  rc.stack.recv_buffer = OptU32(cfg, "recvBuffer", rc.stack.recv_buffer);
  rc.stack.send_buffer = OptU32(cfg, "sendBuffer", rc.stack.send_buffer);
  rc.stack.time_wait = static_cast<stack::Micros>(OptU32(cfg, "timeWaitMs", 1000)) * 1000;
  rc.stack.rto_min = static_cast<stack::Micros>(OptU32(cfg, "rtoMinMs", 200)) * 1000;
  rc.spin_us = OptU32(cfg, "spinUs", 0);
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

// lookup(address, port) -> LinkAddr of a live listener, or -1
Napi::Value Lookup(const Napi::CallbackInfo& info) {
  stack::IpAddr a;
  if (!ParseAddr(info[0], &a)) return Napi::Number::New(info.Env(), -1);
  return Napi::Number::New(info.Env(), static_cast<double>(Rt(info)->Lookup(a, U32(info, 1))));
}

// connect(localAddr, localPort, remoteAddr, remotePort, via) -> id or -errno
Napi::Value Connect(const Napi::CallbackInfo& info) {
  stack::Endpoint local, remote;
  if (!ParseAddr(info[0], &local.addr) || !ParseAddr(info[2], &remote.addr))
    return Napi::Number::New(info.Env(), -EINVAL);
  local.port = static_cast<uint16_t>(U32(info, 1));
  remote.port = static_cast<uint16_t>(U32(info, 3));
  return Napi::Number::New(info.Env(), Rt(info)->Connect(local, remote, U32(info, 4)));
}

// listen(addr, port, backlog, v6only, shareKey) -> id or -errno
Napi::Value Listen(const Napi::CallbackInfo& info) {
  stack::Endpoint local;
  if (!ParseAddr(info[0], &local.addr)) return Napi::Number::New(info.Env(), -EINVAL);
  local.port = static_cast<uint16_t>(U32(info, 1));
  int backlog = info[2].As<Napi::Number>().Int32Value();
  return Napi::Number::New(info.Env(),
                           Rt(info)->Listen(local, backlog, info[3].ToBoolean(), U32(info, 4)));
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
Napi::Value Reset(const Napi::CallbackInfo& info) {
  Rt(info)->Reset(U32(info, 0));
  return info.Env().Undefined();
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

// sendControl(link, uint8array) -> 0 or -errno
Napi::Value SendControl(const Napi::CallbackInfo& info) {
  auto buf = info[1].As<Napi::Uint8Array>();
  return Napi::Number::New(info.Env(), Rt(info)->SendControl(U32(info, 0), buf.Data(), buf.ByteLength()));
}
// setMirror(link, on) -> 0 or -errno
Napi::Value SetMirror(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), Rt(info)->SetMirror(U32(info, 0), info[1].ToBoolean()));
}
Napi::Value Self(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), Rt(info)->Self()); }
Napi::Value Stacks(const Napi::CallbackInfo& info) { return Rt(info)->Stacks(info.Env()); }
Napi::Value Connections(const Napi::CallbackInfo& info) { return Rt(info)->Connections(info.Env()); }

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // One Runtime per environment (main thread or worker): no static globals.
  auto* rt = new Runtime(env);
  env.SetInstanceData<Runtime>(rt);
  exports.Set("attach", Napi::Function::New(env, Attach, "attach"));
  exports.Set("detach", Napi::Function::New(env, Detach, "detach"));
  exports.Set("lookup", Napi::Function::New(env, Lookup, "lookup"));
  exports.Set("connect", Napi::Function::New(env, Connect, "connect"));
  exports.Set("listen", Napi::Function::New(env, Listen, "listen"));
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("writev", Napi::Function::New(env, Writev, "writev"));
  exports.Set("readStart", Napi::Function::New(env, ReadStart, "readStart"));
  exports.Set("readStop", Napi::Function::New(env, ReadStop, "readStop"));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown, "shutdown"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("reset", Napi::Function::New(env, Reset, "reset"));
  exports.Set("setNoDelay", Napi::Function::New(env, SetNoDelay, "setNoDelay"));
  exports.Set("setKeepAlive", Napi::Function::New(env, SetKeepAlive, "setKeepAlive"));
  exports.Set("ref", Napi::Function::New(env, Ref, "ref"));
  exports.Set("endpoint", Napi::Function::New(env, Endpoint, "endpoint"));
  exports.Set("stats", Napi::Function::New(env, Stats, "stats"));
  exports.Set("sendControl", Napi::Function::New(env, SendControl, "sendControl"));
  exports.Set("setMirror", Napi::Function::New(env, SetMirror, "setMirror"));
  exports.Set("self", Napi::Function::New(env, Self, "self"));
  exports.Set("stacks", Napi::Function::New(env, Stacks, "stacks"));
  exports.Set("connections", Napi::Function::New(env, Connections, "connections"));
  return exports;
}

}  // namespace sidestep::addon

static Napi::Object InitSidestep(Napi::Env env, Napi::Object exports) {
  return sidestep::addon::Init(env, exports);
}

NODE_API_MODULE(sidestep, InitSidestep)
