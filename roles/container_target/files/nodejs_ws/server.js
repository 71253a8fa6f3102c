'use strict';
// The 2017 baseline (dforsten/websockets-includeos-vs-nodejs): a single-threaded node.js `ws` echo
// server. Each message goes back as it came (text as text, as `ws` 3 did in 2017). Added for the
// kit: GET /healthz answers 200 "ok" (other plain HTTP requests get 426), the port comes from
// $PORT, and SIGTERM exits at once (node as PID 1 ignores it otherwise).
const http = require('http');
const WebSocket = require('ws');

const port = Number(process.env.PORT || 8080);
const server = http.createServer((req, res) => {
  const ok = req.url === '/healthz';
  res.writeHead(ok ? 200 : 426, { 'Content-Type': 'text/plain' });
  res.end(ok ? 'ok' : 'Upgrade Required');
});
const wss = new WebSocket.Server({ server });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
server.listen(port, '0.0.0.0', () => console.log(`nodejs_ws: listening on 0.0.0.0:${port}`));
process.on('SIGTERM', () => process.exit(0));
