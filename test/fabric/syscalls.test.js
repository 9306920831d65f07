// Need-wakeup doorbells, counted with strace: a producer rings (one write to
// the consumer's eventfd, or a sendto on its datagram socket where the
// eventfd can't be shared) only when it finds the consumer asleep. In a
// bulk transfer the consumer is kept busy, so the sender makes almost no
// doorbell syscalls; in a ping-pong run every message finds its consumer
// asleep, and a round trip costs about what it costs on kernel sockets.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const { Harness } = require('../support/harness');

const STRACE = '/usr/bin/strace';
// '?': not an error where a name doesn't exist (epoll_wait on arm64, epoll_pwait2 before 5.11).
const TRACED = 'sendto,recvfrom,write,read,?epoll_wait,epoll_pwait,?epoll_pwait2';
const MB = 1024 * 1024;

/** Why strace can't be used here, or null. */
function straceUnusable() {
  if (!fs.existsSync(STRACE)) return `${STRACE} is not installed`;
  const r = spawnSync(STRACE, ['-f', '-o', '/dev/null', '-e', `trace=${TRACED}`, process.execPath, '-e', ''], { encoding: 'utf8' });
  return r.status === 0 ? null : `strace cannot trace here: ${r.stderr.trim().split('\n')[0]}`;
}

/**
 * Start a fixture as strace's child (which ptrace_scope=1 allows, unlike
 * attaching to a running process): every traced syscall of every thread goes
 * to `log`, one line each.
 */
function startTraced(h, log, fixture, args) {
  // -y: fds are printed with what they are, so eventfd writes can be told apart.
  return h.startWrapped([STRACE, '-f', '-y', '-s', '24', '-o', log, '-e', `trace=${TRACED}`], fixture, args);
}

/**
 * Syscall counts {name: calls} between the fixture's {"started":true} line
 * and its next line (the report), both written to stdout (fd 1). Writes to
 * an eventfd are counted apart, as `write(eventfd)`: the doorbell (libuv's
 * own uv_async wake-ups from V8's helper threads are among them too).
 */
function countWindow(log) {
  const calls = {};
  let inside = false;
  for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
    const m = /^\d+\s+(\w+)\((.*)/.exec(line); // "<... resumed>" lines don't match
    if (!m) continue;
    let [, name, rest] = m;
    const stdout = /^1(<[^>]*>)?, "\{(\\"started\\")?/.exec(rest);
    if (name === 'write' && stdout) {
      if (!inside && stdout[2]) {
        inside = true;
        continue;
      }
      if (inside) return calls;
    }
    if (name === 'write' && /^\d+<anon_inode:\[eventfd\]>/.test(rest)) name = 'write(eventfd)';
    if (inside) calls[name] = (calls[name] ?? 0) + 1;
  }
  throw new Error(`no complete window in ${log}`);
}

const sum = (calls) => Object.values(calls).reduce((a, b) => a + b, 0);
const delta = (after, before, key) => after[key] - before[key];

function tmpFile(t, name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-strace-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, name);
}

test("bulk transfer, 64 MiB: the sender rings the receiver's eventfd, at most once per arming", async (t) => {
  const unusable = straceUnusable();
  if (unusable) return t.skip(unusable);
  const h = new Harness(t);
  const BYTES = 64 * MB;
  const server = h.start('../fabric/fixtures/server.js', ['sink', 'quiet']);
  const { port } = await h.next(server);
  const log = tmpFile(t, 'bulk.strace');
  const client = startTraced(h, log, '../fabric/fixtures/blast-client.js', [port, BYTES]);
  await h.next(client, 30000);
  h.send(server, { cmd: 'stats' });
  const { stats: ss0 } = await h.nextMatching(server, (m) => m.stats);
  h.send(client, {});
  await h.next(client);
  const r = await h.next(client, 60000);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const calls = countWindow(log);
  assert.ifError(r.error);
  assert.deepStrictEqual([r.bypassed, r.kernel, r.bytes], [true, false, BYTES]);
  const framesOut = delta(r.stats, r.before, 'framesOut');
  const rung = delta(r.stats, r.before, 'doorbellsRung');
  // The doorbell's syscalls: eventfd writes (or datagrams, the fallback).
  const bells = (calls.sendto ?? 0) + (calls['write(eventfd)'] ?? 0);
  assert.ok(delta(r.stats, r.before, 'bytesOut') >= BYTES);
  h.send(server, { cmd: 'stats' });
  const { stats: ss } = await h.nextMatching(server, (m) => m.stats);
  t.diagnostic(`bulk ${BYTES / MB} MiB in ${r.ms} ms (traced): client doorbell syscalls ${bells} (${(bells / (BYTES / MB)).toFixed(2)}/MiB) for ${framesOut} frames out; ` +
    `doorbellsRung ${rung}, suppressed ${delta(r.stats, r.before, 'doorbellsSuppressed')}; all traced syscalls ${sum(calls)} ` +
    `(${(sum(calls) / (BYTES / MB)).toFixed(1)}/MiB) ${JSON.stringify(calls)}; server rang the client ${ss.doorbellsRung} times`);
  // Every ring the process counted is a syscall strace saw (eventfd writes
  // can also be libuv's own wake-ups, so at least as many), and all went to
  // eventfds: the datagram is only the fallback.
  assert.ok(bells >= rung, `${bells} doorbell syscalls traced, ${rung} counted`);
  assert.strictEqual(calls.sendto ?? 0, 0);
  // How often the sender must ring depends on how often it finds the
  // receiver asleep, which is a matter of their relative speed (measured
  // here with the sender slowed by strace: 2.5-13 per MiB, of 16 frames per
  // MiB). What need-wakeup guarantees is that a producer rings only a
  // consumer that armed itself before sleeping, once per arming: never
  // more rings than the receiver's armings, and none while it is awake.
  assert.ok(rung <= delta(ss, ss0, 'arms'), `${rung} rings for ${delta(ss, ss0, 'arms')} armings`);
  assert.ok(ss.bytesIn >= BYTES);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});

test('ping-pong, 1000 round trips of 64 B: a few syscalls per round trip, one doorbell decision per frame', async (t) => {
  const unusable = straceUnusable();
  if (unusable) return t.skip(unusable);
  const h = new Harness(t);
  const ROUNDS = 1000;
  const server = h.start('../fabric/fixtures/server.js', ['echo', 'quiet']);
  const { port } = await h.next(server);
  const log = tmpFile(t, 'pingpong.strace');
  const client = startTraced(h, log, '../fabric/fixtures/pingpong-client.js', [port, ROUNDS, 64]);
  await h.next(client, 30000);
  h.send(client, {});
  await h.next(client);
  const r = await h.next(client, 60000);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const calls = countWindow(log);
  assert.ifError(r.error);
  assert.deepStrictEqual([r.bypassed, r.kernel], [true, false]);
  const framesOut = delta(r.stats, r.before, 'framesOut');
  const rung = delta(r.stats, r.before, 'doorbellsRung');
  const suppressed = delta(r.stats, r.before, 'doorbellsSuppressed');
  const perRound = sum(calls) / ROUNDS;
  t.diagnostic(`ping-pong (traced): ${perRound.toFixed(2)} syscalls per round trip ${JSON.stringify(calls)}; ` +
    `${(framesOut / ROUNDS).toFixed(2)} frames out per round trip, doorbells rung ${rung}, suppressed ${suppressed}; ${r.usPerRound.toFixed(0)} us per round trip`);
  assert.strictEqual(delta(r.stats, r.before, 'bytesIn'), ROUNDS * 64);
  assert.ok(framesOut >= ROUNDS);
  // Every frame sent made exactly one doorbell decision: rung or suppressed;
  // the rings went to the server's eventfd, not the fallback datagram.
  assert.strictEqual(rung + suppressed, framesOut);
  assert.strictEqual(calls.sendto ?? 0, 0);
  // A kernel socket needs write + epoll_wait + read (+ a read hitting EAGAIN)
  // per round trip; the bypass must not do worse than twice that.
  assert.ok(perRound <= 8, `${perRound} syscalls per round trip`);
  h.send(server, { cmd: 'stats' });
  const { stats: ss } = await h.nextMatching(server, (m) => m.stats);
  assert.strictEqual(ss.doorbellsRung + ss.doorbellsSuppressed, ss.framesOut);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
