// Node.js test target. Protocol as examples/probe.rs: prints `ready pid=<pid>`, then per stdin
// line `now` -> `now millis=<ms> monotonic=<ns> ticks=<n>` (Date.now(), process.hrtime.bigint(),
// and the rounds of a 10 ms setInterval, to show whether timers keep working under the skew),
// `quit` -> exits 0.
'use strict';
const readline = require('readline');

let ticks = 0;
setInterval(() => {
  ticks += 1;
}, 10);

process.stdout.write(`ready pid=${process.pid}\n`);
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'now') {
    const millis = Date.now();
    const mono = process.hrtime.bigint();
    process.stdout.write(`now millis=${millis} monotonic=${mono} ticks=${ticks}\n`);
  } else if (cmd === 'quit') {
    process.exit(0);
  } else {
    process.stdout.write(`error unknown command ${JSON.stringify(cmd)}\n`);
  }
});
rl.on('close', () => process.exit(0));
