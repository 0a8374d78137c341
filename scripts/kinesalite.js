// Start kinesalite on 127.0.0.1 only (its command line binds every interface).
// Usage: node scripts/kinesalite.js [port] [data directory]; without a directory data is in memory.
'use strict'
const kinesalite = require('kinesalite')

const port = Number(process.argv[2] || 4567)
const path = process.argv[3] || undefined
const server = kinesalite({
  path,
  createStreamMs: 0,
  deleteStreamMs: 0,
  updateStreamMs: 0,
  shardLimit: 100,
})
server.listen(port, '127.0.0.1', (err) => {
  if (err) throw err
  console.log(`kinesalite listening on 127.0.0.1:${port}${path ? ` (data in ${path})` : ''}`)
})
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)))
}
