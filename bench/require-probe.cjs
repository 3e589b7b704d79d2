// Fresh-process probe for bench/run.mjs: prints how many ms require(argv[2]) took.
const { performance } = require('node:perf_hooks')
const t0 = performance.now()
require(process.argv[2])
process.stdout.write(String(performance.now() - t0) + '\n')
