// 16 parallel 256 MiB streams between two processes: byte-exact, and a full
// ring never costs a frame — the sender waits for the consumer's word that
// there is room (need-room, the other way from need-wakeup) instead of
// dropping it and waiting for a retransmission timeout (issue 14).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { Harness } = require('../support/harness');

const STREAMS = 16;

async function streams(t, bytes, env) {
  const h = new Harness(t);
  const server = h.start('../fabric/fixtures/hash-sink.js', [], { env });
  const { port } = await h.next(server);
  const client = h.start('../fabric/fixtures/streams-client.js', [port, STREAMS, bytes, 100], { env });
  const sent = await h.next(client, 240000);
  const done = [];
  while (done.length < STREAMS) {
    const m = await h.next(server, 240000);
    assert.notStrictEqual(m.event, 'error', JSON.stringify(m));
    if (m.event === 'done') done.push(m);
  }
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  const want = new Set(sent.results.map((r) => r.sentSha));
  for (const d of done) {
    assert.strictEqual(d.bytes, bytes);
    assert.ok(want.has(d.sha), `stream ${d.id}: bytes differ`);
    assert.deepStrictEqual([d.bypassed, d.kernel], [true, false]);
  }
  assert.ok(sent.results.every((r) => r.bypassed && !r.kernel));
  h.send(server, { cmd: 'stats' });
  const { stats: ss } = await h.nextMatching(server, (m) => m.stats);
  const cs = sent.stats;
  for (const [who, st] of [['client', cs], ['server', ss]]) {
    assert.strictEqual(st.ringDrops, 0, `${who}: ring drops`);
    assert.strictEqual(st.retransmissionTimeouts, 0, `${who}: retransmission timeouts`);
  }
  assert.ok(cs.framesByReference > 0, 'data went by reference');
  t.diagnostic(`client: txBlocked ${cs.txBlocked}, framesByReference ${cs.framesByReference}, retransmits ${cs.retransmits}`);
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  return cs;
}

test(`${STREAMS} parallel 256 MiB streams: byte-exact, no ring drops, no retransmission timeouts`, async (t) => {
  await streams(t, 256 << 20, {});
});

test(`${STREAMS} parallel streams through rings too small for their windows: the sender waits for room, nothing dropped`, async (t) => {
  // 1280-byte packets and 256 KiB rings: 16 windows of ~800 segments each
  // can't fit, so the sender meets a full ring again and again.
  const cs = await streams(t, 16 << 20, { SIDESTEP_RING_BYTES: String(256 << 10), SIDESTEP_MTU: '1280' });
  assert.ok(cs.txBlocked > 0, `the sender never found the ring full (txBlocked ${cs.txBlocked})`);
});
