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
// kinesalite throws from a request's 'error' listener when a client goes away in the middle
// of a request (a killed process, a closed connection), which would end the server for
// every other client. Such a request is over anyway: note it and keep serving.
process.on('uncaughtException', (err) => {
  if (err && (err.code === 'ECONNRESET' || err.message === 'aborted')) {
    console.error(`kinesalite: a client went away mid-request (${err.message})`)
    return
  }
  console.error(err)
  process.exit(1)
})
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0))
    server.closeAllConnections()
  })
}
