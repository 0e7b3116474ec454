// ClientMachine as a table: (state, message) -> (next state, actions) (PROTOCOL.md 8.2, 10). No sockets.
import t from 'tap'
import { clientMac, serverMac } from '../src/protocol/auth.js'
import { ERROR_CODE, HASH_ALGO } from '../src/protocol/constants.js'
import type { Message, MessageTag, Welcome } from '../src/protocol/messages.js'
import { ClientMachine, type ClientAction, type ClientIdentity, type ClientState } from '../src/client/machine.js'

const bytes = (n: number, fill: number): Buffer => Buffer.alloc(n, fill)

const CLIENT_ID = bytes(16, 0xc1)
const CLIENT_NONCE = bytes(16, 0xc2)
const SERVER_NONCE = bytes(16, 0x5e)
const MIRROR_ID = bytes(16, 0x11)
const TOKEN = Buffer.from('correct horse battery staple')
const HASH = bytes(16, 0xab)
const BINDING = { clientNonce: CLIENT_NONCE, serverNonce: SERVER_NONCE, clientId: CLIENT_ID }

const WELCOME: Welcome = {
  type: 'welcome',
  version: 1,
  algo: 1,
  authRequired: false,
  serverNonce: SERVER_NONCE,
  mirrorId: MIRROR_ID,
  maxOpenUploads: 32,
  maxInflight: 4096,
  keepaliveMs: 15_000,
}
const WELCOME_AUTH: Welcome = { ...WELCOME, authRequired: true }

/** One message of every type of PROTOCOL.md 7, each well formed; ERROR here is request-level. */
const SAMPLES: Record<MessageTag, Message> = {
  hello: {
    type: 'hello',
    minVersion: 1,
    maxVersion: 1,
    clientId: CLIENT_ID,
    clientNonce: CLIENT_NONCE,
    algos: [1],
    clientName: 'x',
  },
  welcome: WELCOME,
  auth: { type: 'auth', mac: clientMac(TOKEN, BINDING) },
  authOk: { type: 'authOk', mac: serverMac(TOKEN, BINDING) },
  ping: { type: 'ping' },
  pong: { type: 'pong' },
  error: { type: 'error', requestId: 7, code: ERROR_CODE.SFM_ERR_NOT_FOUND, message: 'no such path' },
  ok: { type: 'ok', requestId: 7 },
  haveQuery: { type: 'haveQuery', requestId: 7, hashes: [HASH] },
  haveReply: { type: 'haveReply', requestId: 7, have: [true] },
  list: { type: 'list', requestId: 7 },
  listing: { type: 'listing', requestId: 7, last: true, entries: [] },
  digestQuery: { type: 'digestQuery', requestId: 7 },
  digestReply: { type: 'digestReply', requestId: 7, digest: HASH },
  chunk: { type: 'chunk', uploadId: 7, hash: HASH, data: Buffer.from('data') },
  refs: { type: 'refs', uploadId: 7, refs: [{ hash: HASH, length: 4 }] },
  commit: { type: 'commit', uploadId: 7, path: 'a', mode: 0o644, mtimeNs: 1n, size: 4, contentId: HASH },
  abort: { type: 'abort', uploadId: 7 },
  delete: { type: 'delete', requestId: 7, path: 'a' },
  mkdir: { type: 'mkdir', requestId: 7, path: 'a', mode: 0o755, mtimeNs: 1n },
  symlink: { type: 'symlink', requestId: 7, path: 'l', target: 't', mtimeNs: 1n },
  rename: { type: 'rename', requestId: 7, from: 'a', to: 'b' },
  setattr: { type: 'setattr', requestId: 7, path: 'a', mode: 0o600, mtimeNs: 1n },
}
const ALL_TAGS = Object.keys(SAMPLES) as MessageTag[]
const REPLIES: readonly MessageTag[] = ['ok', 'error', 'haveReply', 'listing', 'digestReply']

function identity(token: Buffer | null = null): ClientIdentity {
  return { clientId: CLIENT_ID, clientNonce: CLIENT_NONCE, clientName: 'sfmc test', token }
}

/** A machine driven to `state` by valid messages (awaitAuthOk implies a token). */
function machineIn(state: Exclude<ClientState, 'closed'>, token: Buffer | null = null): ClientMachine {
  const m = new ClientMachine(identity(state === 'awaitAuthOk' ? TOKEN : token))
  if (state === 'awaitWelcome') return m
  if (state === 'awaitAuthOk' || token) {
    m.receive(WELCOME_AUTH)
    if (state === 'ready') m.receive({ type: 'authOk', mac: serverMac(TOKEN, BINDING) })
  } else m.receive(WELCOME)
  if (m.state !== state) throw new Error(`could not drive the machine to ${state} (it is in ${m.state})`)
  return m
}

const kinds = (actions: ClientAction[]): string[] => actions.map((a) => a.kind)

t.test('hello() offers versions 1..2 and XXH3-128 with the identity', async (t) => {
  t.same(new ClientMachine(identity()).hello(), {
    type: 'hello',
    minVersion: 1,
    maxVersion: 2,
    clientId: CLIENT_ID,
    clientNonce: CLIENT_NONCE,
    algos: [HASH_ALGO.XXH3_128],
    clientName: 'sfmc test',
  })
})

t.test('WELCOME decides the handshake', async (t) => {
  type Row = {
    name: string
    token: Buffer | null
    welcome: Welcome
    expect: ClientAction[]
    state: ClientState
  }
  const rows: Row[] = [
    {
      name: 'without AUTH_REQUIRED and without a token: ready',
      token: null,
      welcome: WELCOME,
      expect: [{ kind: 'ready', welcome: WELCOME }],
      state: 'ready',
    },
    {
      name: 'version 2 (the client offers 1..2): ready',
      token: null,
      welcome: { ...WELCOME, version: 2 },
      expect: [{ kind: 'ready', welcome: { ...WELCOME, version: 2 } }],
      state: 'ready',
    },
    {
      name: 'with AUTH_REQUIRED and a token: AUTH with the client MAC',
      token: TOKEN,
      welcome: WELCOME_AUTH,
      expect: [{ kind: 'send', message: { type: 'auth', mac: clientMac(TOKEN, BINDING) } }],
      state: 'awaitAuthOk',
    },
  ]
  for (const row of rows) {
    const m = new ClientMachine(identity(row.token))
    t.same(m.receive(row.welcome), row.expect, row.name)
    t.equal(m.state, row.state, `${row.name}: state ${row.state}`)
  }

  type FailRow = { name: string; token: Buffer | null; welcome: Welcome; code: string | RegExp; text: RegExp }
  const fails: FailRow[] = [
    {
      name: 'AUTH_REQUIRED but the client has no token',
      token: null,
      welcome: WELCOME_AUTH,
      code: 'SFM_ERR_AUTH_FAILED',
      text: /token/,
    },
    {
      name: 'the client has a token but the server does not require auth [M-AUTH-2]',
      token: TOKEN,
      welcome: WELCOME,
      code: 'SFM_ERR_AUTH_FAILED',
      text: /token/,
    },
    { name: 'a version above those the client offered', token: null, welcome: { ...WELCOME, version: 3 }, code: 'SFM_ERR_VERSION', text: /3/ },
    { name: 'a version below those the client offered', token: null, welcome: { ...WELCOME, version: 0 }, code: 'SFM_ERR_VERSION', text: /0/ },
    // PROTOCOL.md names no code for this; VERSION or HASH_ALGO both describe it.
    { name: 'an algorithm the client did not offer', token: null, welcome: { ...WELCOME, algo: 2 }, code: /^SFM_ERR_(VERSION|HASH_ALGO)$/, text: /algorithm 2/ },
  ]
  for (const row of fails) {
    const m = new ClientMachine(identity(row.token))
    const actions = m.receive(row.welcome)
    t.same(kinds(actions), ['fail'], `${row.name}: fail`)
    t.match(actions[0], { kind: 'fail', code: row.code, message: row.text, notify: true }, `${row.name}: ${String(row.code)}`)
    t.notOk(actions.some((a) => a.kind === 'send' && a.message.type === 'auth'), `${row.name}: no AUTH sent`)
    t.equal(m.state, 'closed', `${row.name}: closed`)
  }
})

t.test('AUTH_OK: the server must prove it knows the token [M-AUTH-1]', async (t) => {
  const m = machineIn('awaitAuthOk')
  t.same(m.receive({ type: 'authOk', mac: serverMac(TOKEN, BINDING) }), [{ kind: 'ready', welcome: WELCOME_AUTH }], 'the right MAC: ready')
  t.equal(m.state, 'ready')

  const wrong: [string, Buffer][] = [
    ['random bytes', bytes(32, 0x42)],
    ['the client MAC reflected back', clientMac(TOKEN, BINDING)],
    ['a MAC with another token', serverMac(Buffer.from('another token'), BINDING)],
    ['a MAC for another server nonce (a replay)', serverMac(TOKEN, { ...BINDING, serverNonce: bytes(16, 1) })],
    ['a MAC for another client nonce', serverMac(TOKEN, { ...BINDING, clientNonce: bytes(16, 2) })],
    ['a MAC one byte short', serverMac(TOKEN, BINDING).subarray(0, 31)],
  ]
  for (const [name, mac] of wrong) {
    const m = machineIn('awaitAuthOk')
    const actions = m.receive({ type: 'authOk', mac })
    t.same(kinds(actions), ['fail'], `${name}: fail`)
    t.match(actions[0], { code: 'SFM_ERR_AUTH_FAILED', notify: true }, `${name}: SFM_ERR_AUTH_FAILED`)
    t.equal(m.state, 'closed', `${name}: closed`)
  }
})

t.test('a connection-level ERROR ends the session in every state, reported by code name', async (t) => {
  type Row = { name: string; requestId: number; code: number; expect: string }
  const rows: Row[] = [
    { name: 'BUSY with id 0', requestId: 0, code: ERROR_CODE.SFM_ERR_BUSY, expect: 'SFM_ERR_BUSY' },
    { name: 'AUTH_REQUIRED with id 0', requestId: 0, code: ERROR_CODE.SFM_ERR_AUTH_REQUIRED, expect: 'SFM_ERR_AUTH_REQUIRED' },
    { name: 'VERSION with id 0', requestId: 0, code: ERROR_CODE.SFM_ERR_VERSION, expect: 'SFM_ERR_VERSION' },
    { name: 'SHUTDOWN with id 0', requestId: 0, code: ERROR_CODE.SFM_ERR_SHUTDOWN, expect: 'SFM_ERR_SHUTDOWN' },
    { name: 'a request-level code with id 0', requestId: 0, code: ERROR_CODE.SFM_ERR_IO, expect: 'SFM_ERR_IO' },
    { name: 'an unknown code below 32 with id 0', requestId: 0, code: 30, expect: 'SFM_ERR_UNKNOWN' },
    { name: 'an unknown code below 32 with an id [M-ERROR-1]', requestId: 7, code: 30, expect: 'SFM_ERR_UNKNOWN' },
    { name: 'a connection-level code with an id', requestId: 7, code: ERROR_CODE.SFM_ERR_LIMIT, expect: 'SFM_ERR_LIMIT' },
  ]
  for (const state of ['awaitWelcome', 'awaitAuthOk', 'ready'] as const) {
    for (const row of rows) {
      const m = machineIn(state)
      const actions = m.receive({ type: 'error', requestId: row.requestId, code: row.code, message: 'the server says no' })
      t.same(actions, [{ kind: 'refused', code: row.expect, message: 'the server says no' }], `${state}, ${row.name}: refused, ${row.expect}`)
      t.equal(m.state, 'closed', `${state}, ${row.name}: closed`)
    }
  }
})

t.test('in READY, replies pass through, PING gets PONG, PONG is dropped', async (t) => {
  for (const token of [null, TOKEN]) {
    const how = token ? 'after AUTH' : 'no token'
    for (const tag of REPLIES) {
      const m = machineIn('ready', token)
      const msg = SAMPLES[tag]
      t.same(m.receive(msg), [{ kind: 'reply', message: msg }], `${how}: ${tag} is a reply`)
      t.equal(m.state, 'ready')
    }
    const unknownRequestLevel = { type: 'error', requestId: 9, code: 99, message: 'future' } as const
    const m = machineIn('ready', token)
    t.same(m.receive(unknownRequestLevel), [{ kind: 'reply', message: unknownRequestLevel }], `${how}: an unknown code of 32 or more fails that request only [M-ERROR-1]`)
    t.same(m.receive({ type: 'ping' }), [{ kind: 'send', message: { type: 'pong' } }], `${how}: PING -> PONG [M-PING-1]`)
    t.same(m.receive({ type: 'pong' }), [], `${how}: PONG is dropped`)
    t.equal(m.state, 'ready')
  }
})

t.test('anything else is SFM_ERR_UNEXPECTED, in every state', async (t) => {
  const allowed: Record<Exclude<ClientState, 'closed'>, readonly MessageTag[]> = {
    awaitWelcome: ['welcome'],
    awaitAuthOk: ['authOk'],
    ready: [...REPLIES, 'ping', 'pong'],
  }
  for (const state of ['awaitWelcome', 'awaitAuthOk', 'ready'] as const) {
    for (const tag of ALL_TAGS) {
      if (allowed[state].includes(tag)) continue
      const m = machineIn(state)
      const actions = m.receive(SAMPLES[tag])
      t.same(kinds(actions), ['fail'], `${state}, ${tag}: fail`)
      t.match(actions[0], { code: 'SFM_ERR_UNEXPECTED', notify: true }, `${state}, ${tag}: SFM_ERR_UNEXPECTED`)
      t.equal(m.state, 'closed', `${state}, ${tag}: closed`)
    }
  }
})

t.test('after closed, nothing more', async (t) => {
  const closers: [string, (m: ClientMachine) => void][] = [
    ['refused', (m) => m.receive({ type: 'error', requestId: 0, code: 17, message: '' })],
    ['unexpected', (m) => m.receive(SAMPLES.hello)],
    ['fail()', (m) => m.fail('SFM_ERR_TIMEOUT', 'timer')],
  ]
  for (const [how, close] of closers) {
    const m = machineIn('ready')
    close(m)
    t.equal(m.state, 'closed', how)
    for (const tag of ALL_TAGS) t.same(m.receive(SAMPLES[tag]), [], `${how}, then ${tag}: nothing`)
    t.same(m.receive({ type: 'error', requestId: 0, code: 1, message: '' }), [], `${how}, then ERROR id 0: nothing`)
    t.same(m.fail('SFM_ERR_SHUTDOWN', 'again'), [], `${how}, then fail(): nothing`)
  }
})

t.test('fail() ends the session and says whether to tell the server', async (t) => {
  const m = machineIn('ready')
  t.same(m.fail('SFM_ERR_MALFORMED', 'bad bytes'), [{ kind: 'fail', code: 'SFM_ERR_MALFORMED', message: 'bad bytes', notify: true }])
  t.equal(m.state, 'closed')
  const quiet = machineIn('awaitWelcome')
  t.same(quiet.fail('SFM_ERR_TIMEOUT', 'gone', false), [{ kind: 'fail', code: 'SFM_ERR_TIMEOUT', message: 'gone', notify: false }])
})
