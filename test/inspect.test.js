// sidestep stat and sidestep capture: what runs on the fabric, asked of each
// stack through its inspection socket while it runs. Capture needs the
// captured process's consent (SIDESTEP_CAPTURE=1); stat answers its own uid.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync, execFileSync } = require('node:child_process');
const { Harness, ROOT } = require('./support/harness');

const CLI = path.join(ROOT, 'dist', 'cli.js');

/** Minimal pcap reader: [{ts, data}] of a LINKTYPE_RAW (101) file. */
function readPcap(file) {
  const b = fs.readFileSync(file);
  assert.strictEqual(b.readUInt32LE(0), 0xa1b2c3d4, 'pcap magic');
  assert.strictEqual(b.readUInt32LE(20), 101, 'LINKTYPE_RAW');
  const out = [];
  for (let off = 24; off + 16 <= b.length; ) {
    const len = b.readUInt32LE(off + 8);
    out.push({ ts: b.readUInt32LE(off) + b.readUInt32LE(off + 4) / 1e6, data: b.subarray(off + 16, off + 16 + len) });
    off += 16 + len;
  }
  return out;
}

/** TCP fields of a raw IPv4 packet. */
function tcp(p) {
  assert.strictEqual(p[0] >> 4, 4);
  const ihl = (p[0] & 15) * 4;
  const t = p.subarray(ihl);
  const off = (t[12] >> 4) * 4;
  const flags = t[13];
  return {
    src: t.readUInt16BE(0), dst: t.readUInt16BE(2), seq: t.readUInt32BE(4), ack: t.readUInt32BE(8),
    syn: !!(flags & 2), fin: !!(flags & 1), rst: !!(flags & 4), ackf: !!(flags & 16),
    payload: t.subarray(off, p.readUInt16BE(2) - ihl).toString(),
  };
}

test('sidestep stat lists a hooked process, its listener and its connections', async (t) => {
  const h = new Harness(t);
  const p = h.start('capture-peer.js');
  const { port } = await h.next(p);
  const r = spawnSync(process.execPath, [CLI, 'stat', '--json'], {
    env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: h.fabric }, encoding: 'utf8', timeout: 15000,
  });
  assert.strictEqual(r.status, 0, r.stderr);
  const reports = JSON.parse(r.stdout);
  assert.strictEqual(reports.length, 1);
  const [s] = reports;
  assert.strictEqual(s.pid, p.child.pid);
  assert.ok(s.reply, 'the process answered');
  assert.match(s.reply.argv.join(' '), /capture-peer\.js/);
  assert.deepStrictEqual(s.reply.connections.filter((c) => c.listener).map((c) => [c.localAddress, c.localPort]), [['127.0.0.1', port]]);
  const text = spawnSync(process.execPath, [CLI, 'stat'], {
    env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: h.fabric }, encoding: 'utf8', timeout: 15000,
  });
  assert.match(text.stdout, new RegExp(`stack ${p.child.pid}\\.0  pid ${p.child.pid}  .*capture-peer\\.js  up \\d+s`));
  assert.match(text.stdout, new RegExp(`listening: 127\\.0\\.0\\.1:${port}`));
  h.send(p, { cmd: 'go' });
  await h.next(p);
});

test('sidestep capture writes the exchange as a pcap: handshake, payloads, FINs', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-capture-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'fabric.pcap');
  const h = new Harness(t);
  const p = h.start('capture-peer.js', [], { env: { SIDESTEP_CAPTURE: '1' } });
  const { port } = await h.next(p);
  const cap = spawn(process.execPath, [CLI, 'capture', '-w', file, '--port', String(port)], {
    env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: h.fabric }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.after(() => cap.kill('SIGKILL'));
  let err = '';
  await new Promise((resolve, reject) => {
    cap.stderr.on('data', (d) => {
      err += d;
      if (err.includes('writing')) resolve();
    });
    cap.on('exit', () => reject(new Error(`capture exited early: ${err}`)));
  });
  h.send(p, { cmd: 'go' });
  const done = await h.next(p);
  assert.strictEqual(done.reply, 'echo:hello-capture');
  await new Promise((r) => setTimeout(r, 200)); // let the last frames reach the tool
  const exited = new Promise((r) => cap.on('exit', r));
  cap.kill('SIGINT');
  await exited;
  assert.match(err, /sidestep capture: \d+ packets/);

  const segs = readPcap(file).map((x) => tcp(x.data));
  const [client] = done.ports;
  const fromClient = segs.filter((s) => s.src === client && s.dst === port);
  const fromServer = segs.filter((s) => s.src === port && s.dst === client);
  assert.ok(fromClient[0].syn && !fromClient[0].ackf, 'SYN first');
  assert.ok(fromServer[0].syn && fromServer[0].ackf, 'SYN-ACK');
  assert.strictEqual(fromServer[0].ack, fromClient[0].seq + 1);
  assert.ok(fromClient.some((s) => s.payload === 'hello-capture' && s.seq === fromClient[0].seq + 1));
  assert.ok(fromServer.some((s) => s.payload === 'echo:hello-capture'));
  assert.ok(fromClient.some((s) => s.fin) && fromServer.some((s) => s.fin), 'both sides sent FIN');

  // An independent reader agrees, where one is installed. (TCP's payload
  // field, not a "data" one: the ports are ephemeral, and one that happens
  // to be a registered protocol's has its payload dissected as that.)
  let tshark = null;
  try {
    tshark = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'tcp.flags.syn', '-e', 'tcp.payload'], { encoding: 'utf8', timeout: 20000 });
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
  if (tshark !== null) assert.ok(tshark.replace(/:/g, '').includes(Buffer.from('hello-capture').toString('hex')), tshark);
});

test('sidestep stat --watch refreshes until interrupted', async (t) => {
  const h = new Harness(t);
  const p = h.start('capture-peer.js');
  await h.next(p);
  const watch = spawn(process.execPath, [CLI, 'stat', '--watch'], {
    env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: h.fabric }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => watch.kill('SIGKILL'));
  let out = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no second refresh: ${out}`)), 15000);
    watch.stdout.on('data', (d) => {
      out += d;
      if ((out.match(/fabric: pairs \d+/g) ?? []).length >= 2) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const exited = new Promise((r) => watch.on('exit', (code) => r(code)));
  watch.kill('SIGINT');
  assert.strictEqual(await exited, 0);
  h.send(p, { cmd: 'go' });
  await h.next(p);
});

test('sidestep capture --pid keeps only the packets from or to that process', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-capture-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'pid.pcap');
  const h = new Harness(t);
  const a = h.start('capture-peer.js', [], { env: { SIDESTEP_CAPTURE: '1' } });
  const b = h.start('capture-peer.js', [], { env: { SIDESTEP_CAPTURE: '1' } });
  const [{ port: portA }, { port: portB }] = [await h.next(a), await h.next(b)];
  const cap = spawn(process.execPath, [CLI, 'capture', '-w', file, '--pid', String(a.child.pid)], {
    env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: h.fabric }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.after(() => cap.kill('SIGKILL'));
  let err = '';
  await new Promise((resolve) => cap.stderr.on('data', (d) => ((err += d), err.includes('writing') && resolve())));
  h.send(a, { cmd: 'go' });
  h.send(b, { cmd: 'go' });
  const [doneA, doneB] = [await h.next(a), await h.next(b)];
  assert.strictEqual(doneA.reply, 'echo:hello-capture');
  assert.strictEqual(doneB.reply, 'echo:hello-capture');
  await new Promise((r) => setTimeout(r, 200));
  const exited = new Promise((r) => cap.on('exit', r));
  cap.kill('SIGINT');
  await exited;
  const segs = readPcap(file).map((x) => tcp(x.data));
  const portsA = new Set([portA, doneA.ports[0]]);
  // SYN, SYN-ACK, the request (carrying the handshake's last ACK), the
  // reply, two FINs and the last ACK at least.
  assert.ok(segs.length >= 7, `captured ${segs.length} packets`);
  assert.ok(segs.every((s) => portsA.has(s.src) && portsA.has(s.dst)), 'only process A\'s connection');
  assert.ok(!segs.some((s) => s.src === portB || s.dst === portB));
});

test('sidestep capture gets nothing from a process that did not consent', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sidestep-capture-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'refused.pcap');
  const h = new Harness(t);
  const p = h.start('capture-peer.js');
  await h.next(p);
  const cap = spawn(process.execPath, [CLI, 'capture', '-w', file], {
    env: { ...process.env, NODE_OPTIONS: '', SIDESTEP_FABRIC: h.fabric }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  t.after(() => cap.kill('SIGKILL'));
  let err = '';
  await new Promise((resolve) => cap.stderr.on('data', (d) => ((err += d), err.includes('writing') && resolve())));
  assert.match(err, new RegExp(`pid ${p.child.pid} refused: this process did not consent`));
  h.send(p, { cmd: 'go' });
  assert.strictEqual((await h.next(p)).reply, 'echo:hello-capture');
  await new Promise((r) => setTimeout(r, 200));
  const exited = new Promise((r) => cap.on('exit', r));
  cap.kill('SIGINT');
  await exited;
  assert.match(err, /sidestep capture: 0 packets/);
  assert.strictEqual(readPcap(file).length, 0);
});
