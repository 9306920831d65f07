// Which write contract a Node release speaks to its stream handles, read from
// the JavaScript that calls them (lib/internal/stream_base_commons.js), so a
// minor release that backports a change is recognised without a table edit
// (24.22 took 26.x's contract; 26.0.0 still had the old one). Pure: it is
// given the source text and knows nothing else of Node.

/**
 * - `write-wrap`: Node creates a WriteWrap and passes it to
 *   `writeBuffer(req, data)` / `writev(req, chunks, allBuffers)`; the handle
 *   returns 0 or an error and says in kLastWriteWasAsync whether it will call
 *   `req.oncomplete(status)` later.
 * - `returns-request`: Node passes `null`; the handle returns a number (done,
 *   or failed, synchronously) or a request object it made, with
 *   `writeStatus: null`, to which Node attaches `oncomplete` afterwards (a
 *   status that arrives first goes into writeStatus); a dispatch error goes
 *   into kLastWriteErr.
 */
export type WriteContract = 'write-wrap' | 'returns-request';

/** The body of top-level `function name(...) { ... }` in `source`, or undefined. */
function functionBody(source: string, name: string): string | undefined {
  const m = new RegExp(`\\nfunction ${name}\\s*\\(`).exec(source);
  if (!m) return undefined;
  // Node's lib style closes a top-level function with a `}` in column 0.
  const end = source.indexOf('\n}', m.index + 1);
  return end < 0 ? undefined : source.slice(m.index, end + 2);
}

const has = (body: string | undefined, re: RegExp) => body !== undefined && re.test(body);

/**
 * The contract `source` (internal/stream_base_commons) implements, or
 * undefined when it matches neither shape consistently: then we can't know
 * what Node would do with our handle's answers, and the caller must not guess.
 */
export function writeContractOf(source: string): WriteContract | undefined {
  const writeGeneric = functionBody(source, 'writeGeneric');
  const writevGeneric = functionBody(source, 'writevGeneric');
  const dispatched = functionBody(source, 'afterWriteDispatched');
  const handleWriteReq = functionBody(source, 'handleWriteReq');

  const wrap =
    has(writeGeneric, /createWriteWrap\(/) &&
    has(writeGeneric, /handleWriteReq\(req\b/) &&
    has(handleWriteReq, /\.writeBuffer\(req,/) &&
    has(handleWriteReq, /\.writeUtf8String\(req,/) &&
    has(writevGeneric, /createWriteWrap\(/) &&
    has(writevGeneric, /\.writev\(req,/) &&
    has(dispatched, /kLastWriteWasAsync/);

  const request =
    has(writeGeneric, /\.writeBuffer\(null,/) &&
    has(writeGeneric, /\.writeUtf8String\(null,/) &&
    !has(writeGeneric, /createWriteWrap\(/) &&
    has(writevGeneric, /\.writev\(null,/) &&
    has(dispatched, /kLastWriteErr/) &&
    has(dispatched, /writeStatus/) &&
    has(dispatched, /typeof ret === 'number'/);

  if (wrap === request) return undefined;
  return wrap ? 'write-wrap' : 'returns-request';
}
