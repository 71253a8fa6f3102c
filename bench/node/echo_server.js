'use strict';
// The 2017 baseline: a single-process node.js `ws` echo server (permessage-deflate off, as in 2017).
// Usage: node echo_server.js [port] [host]   (port 0 = ephemeral). Prints one JSON line when listening.
const WebSocket = require('ws');

const port = Number(process.argv[2] || 8080);
const host = process.argv[3] || '127.0.0.1';
// backlog 4096, as the ceiling and wsecho listen (node's default is 511), for the bursts of a fast ramp.
const wss = new WebSocket.Server({ port, host, backlog: 4096, perMessageDeflate: false });

wss.on('connection', (ws) => {
  // ws@8 hands a Buffer plus the frame type; echo with the same type (2017's ws@3 sent back the string).
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});
wss.on('listening', () => {
  process.stdout.write(JSON.stringify({ listening: wss.address().port }) + '\n');
});
const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
