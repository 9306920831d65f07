// A pair's memory is as private as a socket pair's (issue 13, "must hold" 2):
// the region lives in a memfd that only the two peers map; nothing is in
// /dev/shm, /tmp or any other path, no unix socket has a file, and a third
// process of the same uid finds nothing it can open or map without ptrace.
//
// The documented limit: /proc/<pid>/fd and /proc/<pid>/mem are ptrace
// access (PTRACE_MODE_READ / _ATTACH). A same-uid process that may ptrace
// the peers (no Yama, or ptrace_scope 0, and the peers dumpable) can read
// their memory through /proc/<pid>/mem and open their eventfds through
// /proc/<pid>/fd — exactly as it could read a kernel socket's data out of
// the process. What must hold is that it gets nothing *without* ptrace:
// no file, no name, no map_files entry, and no region fd to reopen (the
// peers keep only the mapping, not the memfd).
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const { Harness, kernelSockets } = require('../support/harness');
const { otherUid, kernelConnectionsOn, NOBODY } = require('../support/namespaces');

const SERVER = '../fabric/fixtures/server.js';
const CLIENT = '../fabric/fixtures/bulk-client.js';
const PROBE = '../fabric/fixtures/privacy-probe.js';
const BYTES = 1024 * 1024;
// The pair's memory: its rings, and (issue 9) the writers' send buffers.
const REGION = /\/memfd:sidestep-[a-z]+ \(deleted\)$/;
const isRegion = (line) => REGION.test(line);

function ptraceScope() {
  try {
    return fs.readFileSync('/proc/sys/kernel/yama/ptrace_scope', 'utf8').trim();
  } catch {
    return 'absent (no Yama: classic same-uid ptrace rules)';
  }
}

test('a third process of the peers\' uid finds no file, no name and no descriptor of their pair region to open or map', async (t) => {
  const nobody = otherUid();
  if (nobody.skip) return t.skip(nobody.skip);
  const h = new Harness(t);
  const server = h.start(SERVER, ['echo'], { wrapper: nobody.wrapper });
  const { port, pid: serverPid } = await h.next(server);
  const client = h.start(CLIENT, [port, BYTES, 9, 0, 'wait'], { wrapper: nobody.wrapper });
  const { pid: clientPid } = await h.nextMatching(client, (m) => m.ready, 10000);
  const conn = await h.nextMatching(server, (m) => m.event === 'conn', 5000);
  assert.deepStrictEqual([conn.bypassed, conn.kernel], [true, false]);

  // Both peers map the region (seen as root), under the memfd's name only.
  for (const pid of [serverPid, clientPid]) {
    const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n').filter((l) => /memfd:|\/dev\/shm\//.test(l));
    assert.ok(maps.some((l) => l.endsWith('/memfd:sidestep-pair (deleted)')) && maps.every(isRegion), `pid ${pid} maps:\n${maps.join('\n')}`);
  }

  const probe = h.start(PROBE, [h.fabric, `${serverPid},${clientPid}`], { hooked: false, wrapper: nobody.wrapper });
  const seen = await h.next(probe, 10000);
  assert.deepStrictEqual(await h.exit(probe), { code: 0, signal: null });
  assert.strictEqual(seen.uid, NOBODY);
  // No path: nothing in /dev/shm or /tmp, no unix socket with a file.
  assert.deepStrictEqual(seen.shm, []);
  assert.deepStrictEqual(seen.tmp, []);
  assert.ok(seen.peerSocketsSeen > 0, 'the probe saw the peers\' sockets (so the next check means something)');
  assert.deepStrictEqual(seen.namedUnixSockets, []);
  for (const pid of [serverPid, clientPid]) {
    // It sees that the region exists (maps is PTRACE_MODE_READ, and the
    // peers are dumpable)...
    assert.ok(seen.maps[pid].length > 0 && seen.maps[pid].every(isRegion), JSON.stringify(seen.maps[pid]));
    // ...but can open it through no map_files entry (that takes CAP_SYS_ADMIN)...
    assert.ok(seen.mapFiles[pid].length > 0);
    for (const m of seen.mapFiles[pid]) assert.ok(m.open !== 'opened' && m.openRw !== 'opened', JSON.stringify(m));
    // ...and the peers hold no descriptor of it to reopen: only the mapping.
    assert.ok(seen.fds[pid].length > 0 && seen.fds[pid].every((f) => typeof f.target === 'string'), JSON.stringify(seen.fds[pid]));
    assert.deepStrictEqual(seen.fds[pid].filter((f) => /memfd:/.test(f.target)), []);
  }
  const reopened = Object.values(seen.fds).flat().filter((f) => f.open === 'opened').map((f) => f.target);
  t.diagnostic(`yama ptrace_scope: ${ptraceScope()}`);
  t.diagnostic(`with ptrace access (the documented limit): /proc/<pid>/mem of the region ${JSON.stringify(seen.mem)}; peer fds reopenable through /proc/<pid>/fd: ${JSON.stringify([...new Set(reopened)])}`);

  // The pair was real and carries the data: finish the transfer.
  h.send(client, { go: true });
  const report = await h.nextMatching(client, (m) => m.results, 20000);
  const [r] = report.results;
  assert.ifError(r.error);
  assert.deepStrictEqual([r.bypassed, r.kernel, r.recvBytes, r.recvSha], [true, false, BYTES, r.sentSha]);
  assert.strictEqual(r.stats.pairsCreated, 1);
  assert.deepStrictEqual(kernelConnectionsOn(kernelSockets(), port), []);
  assert.deepStrictEqual(await h.exit(client), { code: 0, signal: null });
  h.send(server, { cmd: 'close' });
  assert.deepStrictEqual(await h.exit(server), { code: 0, signal: null });
  assert.deepStrictEqual(h.leftovers(), [], 'nothing left behind');
});
