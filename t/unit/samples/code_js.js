'use strict';

const http = require('http');
const { URL } = require('url');

const PORT = Number(process.env.PORT || 8080);
const routes = new Map();

function route(method, path, handler) {
  routes.set(`${method} ${path}`, handler);
}

route('GET', '/health', (req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ ok: true, uptime: process.uptime() }));
});

route('POST', '/v1/echo', async (req, res) => {
  const chunks = [];
  for await (const chunk of req) {
    chunks.push(chunk);
    if (chunks.reduce((n, c) => n + c.length, 0) > 1 << 20) {
      res.writeHead(413).end();
      return;
    }
  }
  let body;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (err) {
    res.writeHead(400, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { message: err.message } }));
    return;
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ echo: body, length: chunks.length }));
});

const server = http.createServer((req, res) => {
  const url = new URL(req.url, `http://${req.headers.host}`);
  const handler = routes.get(`${req.method} ${url.pathname}`);
  if (!handler) {
    res.writeHead(404).end('not found\n');
    return;
  }
  Promise.resolve(handler(req, res)).catch((err) => {
    console.error(err);
    if (!res.headersSent) res.writeHead(500);
    res.end();
  });
});

server.listen(PORT, () => console.log(`listening on :${PORT}`));
