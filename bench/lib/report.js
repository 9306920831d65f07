// Reports: raw JSON, a Markdown table and an HTML page with inline SVG bar
// charts, from the runner's results.
'use strict';
const { VARIANTS } = require('./runner');

function fmt(x) {
  if (x == null || !Number.isFinite(x)) return '–';
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 0.1) return x.toFixed(2);
  if (a === 0) return '0';
  return x.toPrecision(2);
}
const fmtRatio = (r) => (r ? `${r.median.toFixed(2)}× (${r.min.toFixed(2)}–${r.max.toFixed(2)})` : '');

function variantLabel(v, results) {
  const d = VARIANTS[v];
  if (d.spin) return `${d.label}=${results.options.spinUs}`;
  return d.label;
}

function cell(c) {
  if (!c || (!c.n && !c.failed)) return '';
  let s = c.n ? fmt(c.median) : 'FAILED';
  if (c.ratio) s += ` · ${fmtRatio(c.ratio)}`;
  if (c.failed) s += ` · **${c.failed} failed**`;
  return s;
}

/** Per workload: the variants its cases use, and its summary rows. */
function groups(results) {
  const out = [];
  for (const w of [...new Set(results.cases.map((c) => c.workload))]) {
    const cs = results.cases.filter((c) => c.workload === w);
    const variants = [...new Set(cs.flatMap((c) => c.variants))];
    out.push({ workload: w, variants, rows: results.rows.filter((r) => cs.some((c) => c.id === r.case)) });
  }
  return out;
}

const TITLES = {
  http: 'HTTP (http.createServer hello world, autocannon; latency µs from autocannon’s per-response hrtime, not its whole-ms histogram)',
  https: 'HTTPS (https.createServer hello world, keep-alive, autocannon; TLS 1.3, self-signed test certificate)',
  pingpong: 'ping-pong over net (one connection, echo, RTT from process.hrtime.bigint(); "unix" = plain node over a unix socket)',
  bulk: 'bulk (deterministic pattern checked byte-exact by the receiver in JS, or only counted by a "counting sink"; "unix" = plain node over a unix socket)',
  churn: 'connection churn (connect, 1 byte each way, client closes)',
  scale: 'scale (idle connections held; RSS minus the RSS before they were opened; idle CPU over the idle window, from /proc ticks of 10 ms, so ±1 tick per window; then ping-pong on one connection)',
};

function markdown(results) {
  const L = [];
  L.push(`## sidestep benchmarks — ${results.date}`, '');
  L.push(`Command: \`${results.command}\``, '');
  const b = results.sidestep;
  if (b) L.push(`sidestep: ${b.root}, checkout at ${b.gitHead}${b.checkoutChangedFiles ? ` with ${b.checkoutChangedFiles} uncommitted file(s) in shim/ and native/` : ''}${b.addonBuilt ? `, addon built ${b.addonBuilt}` : ''}.`, '');
  L.push(`Node ${results.node}, ${results.machine.cpus}× ${results.machine.cpuModel}, load average at start ${results.machine.loadStart.join(' ')}, at end ${(results.machine.loadEnd || []).join(' ')}. ${results.options.reps} interleaved repetition(s) per case (variants in the order shown, reversed every other repetition). Cells: median over repetitions · per-pair ratio to the kernel run of the same repetition, median (min–max).${results.options.cpuProf ? ' **Run with --cpu-prof: profiled runs are slower.**' : ''}`, '');
  for (const g of groups(results)) {
    L.push(`### ${TITLES[g.workload] || g.workload}`, '');
    L.push(`| case | metric | ${g.variants.map((v) => variantLabel(v, results)).join(' | ')} |`);
    L.push(`|---|---|${g.variants.map(() => '---:').join('|')}|`);
    for (const r of g.rows) L.push(`| ${r.label} | ${r.metricLabel} | ${g.variants.map((v) => cell(r.variants[v])).join(' | ')} |`);
    L.push('');
  }
  const failed = results.runs.filter((r) => !r.ok);
  if (failed.length) {
    L.push('### Failed runs (not counted)', '');
    for (const r of failed) L.push(`- ${r.case} ${r.variant} rep ${r.rep + 1}: ${r.error}${r.stderr ? ' — ' + r.stderr.join('; ') : ''}`);
    L.push('');
  }
  const problems = results.runs.filter((r) => r.problems);
  if (problems.length) {
    L.push('### Problems noticed', '');
    for (const r of problems) L.push(`- ${r.case} ${r.variant} rep ${r.rep + 1}: ${r.problems.join('; ')}`);
    L.push('');
  }
  const spin = results.runs.find((r) => r.variant === 'sidestep-spin' && r.ok && r.clientStats);
  if (spin) {
    const s = spin.clientStats;
    L.push(`SIDESTEP_SPIN_US=${results.options.spinUs} was passed to the spin variant; its client's counters: spinsWon ${s.spinsWon ?? 'n/a'}, spinsLost ${s.spinsLost ?? 'n/a'}${!s.spinsWon && !s.spinsLost ? ' (no spinning happened: the variable may not be implemented in this build)' : ''}.`, '');
  }
  return L.join('\n');
}

const COLORS = { kernel: '#8c8c8c', sidestep: '#2b7bb9', 'sidestep-spin': '#7a4fb0', unix: '#d08a2c' };
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);

function chart(row, variants, results) {
  const vs = variants.filter((v) => row.variants[v] && row.variants[v].n);
  const max = Math.max(...vs.map((v) => row.variants[v].max || row.variants[v].median || 0)) || 1;
  const W = 640;
  const LABEL = 210;
  const BAR = 22;
  const H = vs.length * (BAR + 8) + 34;
  const x = (v) => LABEL + ((W - LABEL - 150) * v) / max;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" role="img" aria-label="${esc(row.label + ' ' + row.metricLabel)}">`];
  parts.push(`<text x="0" y="14" font-size="13" font-weight="bold">${esc(row.label)} — ${esc(row.metricLabel)} (${row.better} is better)</text>`);
  vs.forEach((v, i) => {
    const c = row.variants[v];
    const y = 26 + i * (BAR + 8);
    parts.push(`<text x="0" y="${y + 15}" font-size="12">${esc(variantLabel(v, results))}</text>`);
    parts.push(`<rect x="${LABEL}" y="${y}" width="${Math.max(1, x(c.median) - LABEL)}" height="${BAR}" fill="${COLORS[v] || '#555'}"/>`);
    if (c.n > 1) {
      parts.push(`<line x1="${x(c.min)}" x2="${x(c.max)}" y1="${y + BAR / 2}" y2="${y + BAR / 2}" stroke="#000" stroke-width="1.5"/>`);
      for (const e of [c.min, c.max]) parts.push(`<line x1="${x(e)}" x2="${x(e)}" y1="${y + 5}" y2="${y + BAR - 5}" stroke="#000" stroke-width="1.5"/>`);
    }
    const txt = fmt(c.median) + (c.ratio ? `  (${c.ratio.median.toFixed(2)}×)` : '');
    parts.push(`<text x="${Math.max(x(c.median), c.n > 1 ? x(c.max) : 0) + 6}" y="${y + 15}" font-size="12">${esc(txt)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

function html(results, md) {
  const body = [];
  body.push(`<h1>sidestep benchmarks</h1><p>${esc(results.date)} — <code>${esc(results.command)}</code></p>`);
  body.push(`<p>Node ${esc(results.node)}, ${results.machine.cpus}× ${esc(results.machine.cpuModel)}; ${results.options.reps} interleaved repetition(s). Bars: median; whiskers: min–max over repetitions; (×): median per-pair ratio to the kernel.</p>`);
  for (const g of groups(results)) {
    body.push(`<h2>${esc(TITLES[g.workload] || g.workload)}</h2>`);
    for (const r of g.rows.filter((r) => r.chart)) body.push(`<div>${chart(r, g.variants, results)}</div>`);
    body.push('<table><thead><tr><th>case</th><th>metric</th>' + g.variants.map((v) => `<th>${esc(variantLabel(v, results))}</th>`).join('') + '</tr></thead><tbody>');
    for (const r of g.rows) body.push(`<tr><td>${esc(r.label)}</td><td>${esc(r.metricLabel)}</td>` + g.variants.map((v) => `<td>${esc(cell(r.variants[v]).replace(/\*\*/g, ''))}</td>`).join('') + '</tr>');
    body.push('</tbody></table>');
  }
  body.push(`<h2>Markdown</h2><pre>${esc(md)}</pre>`);
  return `<!doctype html><html><head><meta charset="utf-8"><title>sidestep benchmarks ${esc(results.date)}</title><style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}td:nth-child(n+3){text-align:right}svg{margin:.5em 0;font-family:system-ui,sans-serif}pre{white-space:pre-wrap;font-size:12px;background:#f6f6f6;padding:1em}
</style></head><body>${body.join('\n')}</body></html>\n`;
}

module.exports = { markdown, html, fmt };
