// The write contract is read from Node's own stream_base_commons source
// (shim/node/write-contract.ts). Fixtures: that file as Node 24.21.0 (a
// WriteWrap per write) and 24.22.3 (null request, the handle returns one)
// ship it, the release pair where the contract changed inside one major.
'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');
const { writeContractOf } = require('../dist/node/write-contract');
const { loadInternals } = require('../dist/node/internals');

const fixture = (v) => fs.readFileSync(path.join(__dirname, 'fixtures', `stream_base_commons-v${v}.txt`), 'utf8');
const WRAP = fixture('24.21.0');
const REQUEST = fixture('24.22.3');

test('24.21.0 passes a WriteWrap: write-wrap', () => {
  assert.strictEqual(writeContractOf(WRAP), 'write-wrap');
});

test('24.22.3 passes null and takes a request back: returns-request', () => {
  assert.strictEqual(writeContractOf(REQUEST), 'returns-request');
});

function splice(into, from, name) {
  const body = (s) => {
    const start = s.indexOf(`\nfunction ${name}(`);
    assert.ok(start >= 0, `${name} is in the fixture`);
    return [start, s.indexOf('\n}', start + 1) + 2];
  };
  const [a, b] = body(into);
  const [c, d] = body(from);
  return into.slice(0, a) + from.slice(c, d) + into.slice(b);
}

test('a mixture of the two shapes, or a shape neither names, is unknown', () => {
  // Each function swapped alone for the other release's: no consistent contract.
  for (const name of ['writeGeneric', 'writevGeneric', 'afterWriteDispatched']) {
    assert.strictEqual(writeContractOf(splice(WRAP, REQUEST, name)), undefined, `write-wrap with 24.22.3's ${name}`);
    assert.strictEqual(writeContractOf(splice(REQUEST, WRAP, name)), undefined, `returns-request with 24.21.0's ${name}`);
  }
  assert.strictEqual(writeContractOf(''), undefined);
  assert.strictEqual(writeContractOf(WRAP.replace(/\nfunction writeGeneric\(/, '\nfunction writeSomething(')), undefined);
  // A third shape: a request created some new way.
  assert.strictEqual(writeContractOf(REQUEST.replaceAll('(null,', '(makeReq(),')), undefined);
});

test('the running Node speaks a contract sidestep knows, and the shim uses it', () => {
  const source = process.binding('natives')['internal/stream_base_commons'];
  const contract = writeContractOf(source);
  assert.ok(contract, `Node ${process.version}: unknown write contract`);
  const internals = loadInternals();
  assert.strictEqual(typeof internals, 'object', String(internals));
  assert.strictEqual(internals.writeContract, contract);
});
