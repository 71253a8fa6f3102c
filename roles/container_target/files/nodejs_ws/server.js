'use strict';
// The 2017 baseline (dforsten/websockets-includeos-vs-nodejs): a single-threaded node.js `ws` echo
// server. Each message goes back as it came (text as text, as `ws` 3 did in 2017). Added for the
// kit: GET /healthz answers 200 "ok" (other plain HTTP requests get 426), with the run's identity
// in an Echolab-Run-Token header when $ECHOLAB_RUN_TOKEN is set (as wsecho's --run-token), or
// what the file $ECHOLAB_RUN_TOKEN_FILE holds at each request (as wsecho's --run-token-file); the
// port comes from $PORT, and SIGTERM exits at once (node as PID 1 ignores it otherwise).
const fs = require('fs');
const http = require('http');
const WebSocket = require('ws');

const port = Number(process.env.PORT || 8080);
const TOKEN_RE = /^[A-Za-z0-9._~+/=-]{1,128}$/;
const token = process.env.ECHOLAB_RUN_TOKEN || null;
const tokenFile = process.env.ECHOLAB_RUN_TOKEN_FILE || null;
if (token !== null && !TOKEN_RE.test(token)) {
  console.error('nodejs_ws: error: ECHOLAB_RUN_TOKEN must be 1-128 characters of ' +
    `A-Z a-z 0-9 . _ ~ + / = -, got ${JSON.stringify(token)}`);
  process.exit(2);
}
// A missing file or an invalid token in it: no header.
function currentToken() {
  if (tokenFile === null) return token;
  try {
    const text = fs.readFileSync(tokenFile, 'latin1').trim();
    return TOKEN_RE.test(text) ? text : null;
  } catch (err) {
    return null;
  }
}
const server = http.createServer((req, res) => {
  const ok = req.url.split('?')[0] === '/healthz';
  const headers = { 'Content-Type': 'text/plain' };
  const current = ok ? currentToken() : null;
  if (current !== null) headers['Echolab-Run-Token'] = current;
  res.writeHead(ok ? 200 : 426, headers);
  res.end(ok ? 'ok' : 'Upgrade Required');
});
const wss = new WebSocket.Server({ server });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
server.listen(port, '0.0.0.0', () => console.log(`nodejs_ws: listening on 0.0.0.0:${port}`));
process.on('SIGTERM', () => process.exit(0));
