// `node --require sidestep/register app.js`: install the hook before the app
// loads. Invalid SIDESTEP_* configuration stops the program here, naming the
// variable.
import { install } from './sidestep';

install();
