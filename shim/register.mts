// `node --import sidestep/register app.mjs`: the ESM entry runs the same
// CommonJS hook, so both loaders patch the one node:net.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
require('./register.js');
