'use strict';
// A faithful re-implementation of the 2017 benchmark client (src/client.js + src/worker.js of
// dforsten/websockets-includeos-vs-nodejs at de04b26), with parameters instead of constants and a
// machine-readable total at the end. What is kept from 2017:
//   - a master forks W workers; each opens its share of connections in batches of BATCH every
//     INTERVAL ms (2017: 3 per 200 ms), counting attempts, never retrying;
//   - every message is the JSON text {"timestamp": Date.now()}, sent on open and again right after
//     each echo (closed loop, one message in flight per connection); latency = now - echoed stamp;
//   - every 200 ms each worker reports {roundtrips, averageLatency} to the master and resets;
//   - every 1 s the master prints "Roundtrips per second: N, at average latency: X ms" with the
//     unweighted mean of the worker averages (NaN windows included, as in 2017);
//   - errors are logged, not retried.
// Added (so a benchmark can read it): the workers also report cumulative round trips and latency
// with their own timestamp, open/failed counts and RSS; after --duration seconds of measurement
// (which starts once every worker has finished its ramp, plus --warmup) the master prints one line
// `RESULT {json}` and exits. Rates come from the workers' cumulative counters and clocks.
//
// Usage: node client2017.js --url ws://127.0.0.1:8080/ [--connections 10000] [--workers 5]
//        [--batch 3] [--interval 200] [--warmup 5] [--duration 20] [--max-ramp 0] [--quiet]
const childProcess = require('child_process');

function parseArgs(argv) {
  const opts = {
    url: null, connections: 10000, workers: 5, batch: 3, interval: 200,
    warmup: 5, duration: 20, maxRamp: 0, quiet: false, worker: false, share: 0,
  };
  for (let i = 0; i < argv.length; i += 1) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (m, c) => c.toUpperCase());
    if (key === 'quiet' || key === 'worker') { opts[key] = true; continue; }
    if (!(key in opts)) { throw new Error(`unknown option ${argv[i]}`); }
    const value = argv[i + 1];
    i += 1;
    if (value === undefined) { throw new Error(`option ${argv[i - 1]} needs a value`); }
    opts[key] = key === 'url' ? value : Number(value);
    if (key !== 'url' && !(Number.isFinite(opts[key]) && opts[key] >= 0)) {
      throw new Error(`option --${key} needs a non-negative number, got ${value}`);
    }
  }
  if (!opts.url || !/^wss?:\/\//.test(opts.url)) { throw new Error('--url ws://HOST:PORT/ is required'); }
  if (opts.workers < 1 || opts.batch < 1 || opts.interval <= 0) {
    throw new Error('--workers, --batch and --interval must be positive');
  }
  return opts;
}

// ---------------------------------------------------------------- worker (src/worker.js of 2017)
function runWorker(opts) {
  const WebSocket = require('ws');
  const maxConnections = opts.share;
  let curConnected = 0; // attempts, as in 2017
  let fullRoundtrips = 0;
  let totalElapsedTimes = 0;
  let cumRoundtrips = 0; // added: never reset, so the master can difference two reports
  let cumLatency = 0;
  let open = 0;
  let failed = 0;
  let rampDone = maxConnections === 0;
  // Added: this worker's resident memory before its first connection, to get bytes per connection.
  const rssBefore = process.memoryUsage.rss();

  const timestampToJSON = () => JSON.stringify({ timestamp: Date.now() });

  const handleMessage = (ws, msg) => {
    const json = JSON.parse(msg);
    const elapsedTime = Date.now() - json.timestamp;
    totalElapsedTimes += elapsedTime;
    fullRoundtrips += 1;
    cumLatency += elapsedTime;
    cumRoundtrips += 1;
    ws.send(timestampToJSON()); // trigger the next round trip
  };

  const connectBatch = () => {
    const n = Math.min(opts.batch, maxConnections - curConnected);
    for (let i = 0; i < n; i += 1) {
      const ws = new WebSocket(opts.url, { perMessageDeflate: false });
      let wasOpen = false;
      ws.onerror = (err) => {
        if (!opts.quiet) { console.log(`Connection error: ${err.message}`); }
        if (!wasOpen) { failed += 1; }
      };
      ws.on('open', () => { wasOpen = true; open += 1; ws.send(timestampToJSON()); });
      ws.on('close', () => { if (wasOpen) { open -= 1; } });
      ws.on('message', (msg) => handleMessage(ws, msg));
    }
    curConnected += n;
    if (curConnected < maxConnections) {
      setTimeout(connectBatch, opts.interval);
    } else {
      rampDone = true;
    }
  };
  if (maxConnections > 0) { connectBatch(); }

  setInterval(() => {
    process.send({
      roundtrips: fullRoundtrips,
      averageLatency: totalElapsedTimes / fullRoundtrips,
      latencySum: totalElapsedTimes,
      open,
      failed,
      rampDone,
      rssBefore,
      rss: process.memoryUsage.rss(),
      cumRoundtrips,
      cumLatency,
      t: Date.now(),
    });
    fullRoundtrips = 0;
    totalElapsedTimes = 0;
  }, 200);
  process.on('disconnect', () => process.exit(0));
}

// ---------------------------------------------------------------- master (src/client.js of 2017)
function runMaster(opts) {
  let messagesPerSecond = 0;
  let numAverageLatencies = 0;
  let averageLatency = 0;
  const workerState = [];
  let measureStart = null;
  let measureEnd = null;
  let warmupTimer = null;
  let rampIncomplete = false;

  console.log(`benchmarking server ${opts.url}`);
  setInterval(() => {
    averageLatency /= numAverageLatencies;
    console.log(`Roundtrips per second: ${messagesPerSecond}, at average latency: ${averageLatency}ms`);
    messagesPerSecond = 0;
    numAverageLatencies = 0;
    averageLatency = 0;
  }, 1000);

  const workers = [];
  const firstInWindow = []; // per worker: its first report stamped at or after measureStart
  const lastInWindow = []; // per worker: its latest report stamped at or before measureEnd
  let finishing = false;

  const report = () => {
    const open = workerState.reduce((s, w) => s + (w ? w.open : 0), 0);
    const failed = workerState.reduce((s, w) => s + (w ? w.failed : 0), 0);
    const rssBefore = workerState.reduce((s, w) => s + (w ? w.rssBefore : 0), 0);
    const rssEnd = workerState.reduce((s, w) => s + (w ? w.rss : 0), 0);
    // Rates from the workers' own cumulative counters and clocks: a worker whose event loop stalls
    // delivers its reports late, and counting by arrival time would then be wrong.
    let rate = 0;
    let roundtrips = 0;
    let latencySum = 0;
    let span = Infinity;
    for (let i = 0; i < opts.workers; i += 1) {
      const a = firstInWindow[i];
      const b = lastInWindow[i];
      if (!a || !b || b.t <= a.t) { span = 0; continue; }
      const dr = b.cumRoundtrips - a.cumRoundtrips;
      rate += dr / ((b.t - a.t) / 1000);
      roundtrips += dr;
      latencySum += b.cumLatency - a.cumLatency;
      span = Math.min(span, (b.t - a.t) / 1000);
    }
    const result = {
      tool: 'client2017.js',
      connections: opts.connections,
      workers: opts.workers,
      open,
      failed,
      roundtrips,
      // Sum over the workers (the master holds no connection).
      worker_rss_bytes: { before: rssBefore, end: rssEnd },
      measure_started: measureStart / 1000,
      measure_ended: measureEnd / 1000,
      // The shortest span between a worker's first and last report inside the window: below the
      // requested duration when a worker stalled (its reports came late or not at all).
      measured_span_s: span === Infinity ? 0 : span,
      ramp_incomplete: rampIncomplete,
      roundtrips_per_s: rate,
      // Weighted by round trips (the 2017 print is the unweighted mean of means).
      latency_mean_ms: roundtrips ? latencySum / roundtrips : null,
    };
    process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
    workers.forEach((w) => w.kill('SIGTERM'));
    process.exit(0);
  };

  const finish = () => {
    measureEnd = Date.now();
    finishing = true;
    // Wait (bounded) for every worker's report that closes the window.
    const deadline = Date.now() + 30000;
    const poll = () => {
      const late = workerState.some((w) => !w || w.t < measureEnd);
      if (late && Date.now() < deadline) { setTimeout(poll, 100); } else { report(); }
    };
    poll();
  };

  const handleMessage = (index, msg) => {
    messagesPerSecond += msg.roundtrips;
    numAverageLatencies += 1;
    averageLatency += msg.averageLatency;
    workerState[index] = msg;
    if (measureStart !== null && msg.t >= measureStart) {
      if (!firstInWindow[index]) { firstInWindow[index] = msg; }
      if (!finishing || msg.t <= measureEnd) { lastInWindow[index] = msg; }
      else if (lastInWindow[index].t < measureEnd && msg.t - measureEnd < 200) { lastInWindow[index] = msg; }
    }
    if (warmupTimer === null && workerState.filter((w) => w && w.rampDone).length === opts.workers) {
      startWarmup();
    }
  };

  const startWarmup = () => {
    warmupTimer = setTimeout(() => {
      measureStart = Date.now();
      setTimeout(finish, opts.duration * 1000);
    }, opts.warmup * 1000);
  };
  // Added: --max-ramp S starts the warm-up after S seconds even if a worker is still ramping
  // (its event loop can fall so far behind that the ramp would not end in a bounded benchmark).
  if (opts.maxRamp > 0) {
    setTimeout(() => {
      if (warmupTimer === null) {
        rampIncomplete = true;
        startWarmup();
      }
    }, opts.maxRamp * 1000);
  }

  for (let i = 0; i < opts.workers; i += 1) {
    // The 2017 split: equal shares; the remainder goes to the first workers.
    const share = Math.floor(opts.connections / opts.workers) + (i < opts.connections % opts.workers ? 1 : 0);
    const args = process.argv.slice(2).concat(['--worker', '--share', String(share)]);
    const worker = childProcess.fork(__filename, args);
    worker.on('message', (msg) => handleMessage(i, msg));
    worker.on('exit', (code, signal) => {
      if (!finishing) { console.log(`worker exited with code ${code} and signal ${signal}`); }
    });
    workers.push(worker);
  }
  const stop = () => { workers.forEach((w) => w.kill('SIGTERM')); process.exit(1); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

let options;
try {
  options = parseArgs(process.argv.slice(2));
} catch (err) {
  console.error(`client2017.js: ${err.message}`);
  process.exit(2);
}
if (options.worker) { runWorker(options); } else { runMaster(options); }
