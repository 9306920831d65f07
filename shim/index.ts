// sidestep's API: `require('sidestep')`. Loading it installs the hook (as
// `--require sidestep/register` does), so the answers are about this process
// and sockets created after the require are bypassed where possible.
import { install } from './sidestep';

install();

export { install, stats, isBypassed, type Stats } from './sidestep';
export { ConfigError, readConfig, type Config } from './config';
