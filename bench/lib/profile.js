// Summarises a V8 .cpuprofile (node --cpu-prof): self time per function and
// per area (sidestep's shim, Node's own JS, the benchmark/autocannon, native
// and GC, idle). `node bench/lib/profile.js file.cpuprofile [top]` prints it.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

function area(url, name) {
  if (name === '(idle)') return 'idle';
  if (name === '(garbage collector)') return 'gc';
  if (name === '(program)') return 'program (native, outside JS)';
  if (!url) return 'native/builtin';
  if (url.includes('/node_modules/')) return 'node_modules (autocannon, ...)';
  if (url.includes('/dist/')) return 'sidestep shim (dist/)';
  if (url.startsWith('node:')) return 'node core JS';
  if (url.includes('/bench/')) return 'benchmark code';
  return 'other JS';
}

function summarise(file, top = 15) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map();
  // Time per sample: timeDeltas[i] is the time since the previous sample.
  const dt = p.timeDeltas || [];
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i];
    const d = i + 1 < dt.length ? dt[i + 1] : 0;
    self.set(id, (self.get(id) || 0) + Math.max(0, d));
  }
  const fns = new Map();
  const areas = new Map();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const n = byId.get(id);
    const cf = n.callFrame;
    const name = cf.functionName || '(anonymous)';
    const a = area(cf.url, name);
    const key = `${name} ${cf.url ? path.basename(cf.url) + ':' + (cf.lineNumber + 1) : ''}`.trim();
    fns.set(key, (fns.get(key) || 0) + us);
    areas.set(a, (areas.get(a) || 0) + us);
    total += us;
    if (a === 'idle') idle += us;
  }
  const busy = total - idle;
  const pct = (us) => Math.round((us / Math.max(1, busy)) * 1000) / 10;
  const functions = [...fns]
    .filter(([k]) => !k.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([fn, us]) => ({ fn, ms: Math.round(us / 100) / 10, pctOfBusy: pct(us) }));
  const byArea = [...areas].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ area: name, ms: Math.round(us / 100) / 10, pctOfBusy: name === 'idle' ? null : pct(us) }));
  return { file, totalMs: Math.round(total / 1000), busyMs: Math.round(busy / 1000), byArea, functions };
}

function toMarkdown(s, title) {
  const lines = [`#### ${title}`, '', `${s.busyMs} ms busy of ${s.totalMs} ms profiled (\`${path.basename(s.file)}\`)`, '', '| area | ms | % of busy |', '|---|---:|---:|'];
  for (const a of s.byArea) lines.push(`| ${a.area} | ${a.ms} | ${a.pctOfBusy ?? ''} |`);
  lines.push('', '| top self time | ms | % of busy |', '|---|---:|---:|');
  for (const f of s.functions) lines.push(`| \`${f.fn}\` | ${f.ms} | ${f.pctOfBusy} |`);
  return lines.join('\n');
}

module.exports = { summarise, toMarkdown };

if (require.main === module) {
  const s = summarise(process.argv[2], Number(process.argv[3] || 25));
  console.log(toMarkdown(s, process.argv[2]));
}
