// Node's `ws` (Debian's node-ws) as a WebSocket echo server, the transport
// alone: bench/chat_vs_peer.sh measures its memory per idle connection beside
// mooring's /ws/<user> and a raw Beast server.
//
//   node bench/peers/ws_idle.js [PORT]     (0 or none: any free port; the port is printed)
'use strict';
let ws;
try {
  ws = require('ws');
} catch (e) {
  ws = require('/usr/share/nodejs/ws');  // Debian's path, not on every Node's search path
}

const server = new ws.WebSocketServer({
  host: '127.0.0.1', port: Number(process.argv[2] || 0), perMessageDeflate: false, backlog: 4096,
});
server.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
  socket.on('error', () => {});
});
server.on('listening', () => console.log(server.address().port));
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
