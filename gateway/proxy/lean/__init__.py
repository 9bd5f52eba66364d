"""The lean HTTP/1.1 engine (`listen.engine: lean`): both ends of the data path on asyncio
protocols with httptools (llhttp) instead of aiohttp's general-purpose server and client.

- `server`: the staff-facing protocol. It parses requests with llhttp in strict mode, adds
  the checks aiohttp's parser makes (`request_head`: duplicate singleton headers, HTTP
  version; header count and size, deadlines for head and body), and hands each request,
  as a real `aiohttp.web.Request`, to the same aiohttp application: addons, the gateway's
  own pages, middlewares and WebSockets work unchanged. What one browser can make it hold
  is bounded, and each request gets exactly one answer (`relay`: how an upstream's is framed).
- `upstream`: keep-alive connections to the PMS, returned to the pool only when an
  answer provably ended where the next begins, to a request that carried no body.
- `forward`: the forwarder on that pool, relaying answers straight onto the browser's
  connection instead of through a response object.
"""
