// ServerMachine as a table: (state, message) -> (next state, actions), with a policy of plain values
// (PROTOCOL.md 8.1, 10, 9.1). No sockets: every case builds a machine, drives it to a state, feeds one message.
import t from 'tap'
import { clientMac, serverMac } from '../src/protocol/auth.js'
import { HASH_ALGO } from '../src/protocol/constants.js'
import type { Hello, Message, MessageTag } from '../src/protocol/messages.js'
import { ServerMachine, type ServerAction, type ServerPolicy, type ServerState } from '../src/server/machine.js'

const bytes = (n: number, fill: number): Buffer => Buffer.alloc(n, fill)

const CLIENT_ID = bytes(16, 0xc1)
const CLIENT_NONCE = bytes(16, 0xc2)
const SERVER_NONCE = bytes(16, 0x5e)
const MIRROR_ID = bytes(16, 0x11)
const TOKEN = Buffer.from('correct horse battery staple')
const HASH = bytes(16, 0xab)

const HELLO: Hello = {
  type: 'hello',
  minVersion: 1,
  maxVersion: 2,
  clientId: CLIENT_ID,
  clientNonce: CLIENT_NONCE,
  algos: [HASH_ALGO.XXH3_128],
  clientName: 'test-client',
}

const BINDING = { clientNonce: CLIENT_NONCE, serverNonce: SERVER_NONCE, clientId: CLIENT_ID }

/** One message of every type of PROTOCOL.md 7, each well formed. */
const SAMPLES: Record<MessageTag, Message> = {
  hello: HELLO,
  welcome: {
    type: 'welcome',
    version: 1,
    algo: 1,
    authRequired: false,
    serverNonce: SERVER_NONCE,
    mirrorId: MIRROR_ID,
    maxOpenUploads: 32,
    maxInflight: 4096,
    keepaliveMs: 15_000,
  },
  auth: { type: 'auth', mac: clientMac(TOKEN, BINDING) },
  authOk: { type: 'authOk', mac: serverMac(TOKEN, BINDING) },
  ping: { type: 'ping' },
  pong: { type: 'pong' },
  error: { type: 'error', requestId: 7, code: 38, message: 'request-level error' },
  ok: { type: 'ok', requestId: 7 },
  haveQuery: { type: 'haveQuery', requestId: 7, hashes: [HASH] },
  haveReply: { type: 'haveReply', requestId: 7, have: [true] },
  list: { type: 'list', requestId: 7 },
  listing: { type: 'listing', requestId: 7, last: true, entries: [] },
  digestQuery: { type: 'digestQuery', requestId: 7 },
  digestReply: { type: 'digestReply', requestId: 7, digest: HASH },
  chunk: { type: 'chunk', uploadId: 7, hash: HASH, data: Buffer.from('data') },
  refs: { type: 'refs', uploadId: 7, refs: [{ hash: HASH, length: 4 }] },
  commit: { type: 'commit', uploadId: 7, path: 'a/b', mode: 0o644, mtimeNs: 1n, size: 4, contentId: HASH },
  abort: { type: 'abort', uploadId: 7 },
  delete: { type: 'delete', requestId: 7, path: 'a' },
  mkdir: { type: 'mkdir', requestId: 7, path: 'a', mode: 0o755, mtimeNs: 1n },
  symlink: { type: 'symlink', requestId: 7, path: 'l', target: '../t', mtimeNs: 1n },
  rename: { type: 'rename', requestId: 7, from: 'a', to: 'b' },
  setattr: { type: 'setattr', requestId: 7, path: 'a', mode: 0o600, mtimeNs: 1n },
}
const ALL_TAGS = Object.keys(SAMPLES) as MessageTag[]

/** Client-to-server requests (section 7): in READY each passes through as a `request` action. */
const REQUESTS: readonly MessageTag[] = [
  'haveQuery',
  'list',
  'digestQuery',
  'chunk',
  'refs',
  'commit',
  'abort',
  'delete',
  'mkdir',
  'symlink',
  'rename',
  'setattr',
]
/** Server-to-client messages: never acceptable from a client. */
const SERVER_DIRECTION: readonly MessageTag[] = ['welcome', 'ok', 'haveReply', 'listing', 'digestReply', 'authOk']

interface TestPolicy extends ServerPolicy {
  /** Every claim() call, in order. */
  readonly claims: { clientId: Buffer; clientName: string }[]
}

interface PolicyValues {
  token?: Buffer | null
  insecure?: boolean
  peerIsLoopback?: boolean
  /** What claim() returns: null takes the mirror, a string names the client that holds it. */
  holder?: string | null
}

function policy(v: PolicyValues = {}): TestPolicy {
  const claims: { clientId: Buffer; clientName: string }[] = []
  return {
    token: v.token ?? null,
    insecure: v.insecure ?? false,
    peerIsLoopback: v.peerIsLoopback ?? true,
    serverNonce: SERVER_NONCE,
    mirrorId: MIRROR_ID,
    maxOpenUploads: 32,
    maxInflight: 4096,
    keepaliveMs: 15_000,
    claims,
    claim(clientId, clientName) {
      claims.push({ clientId, clientName })
      return v.holder ?? null
    },
  }
}

/** A machine driven to `state` by valid messages: no token for 'ready' unless a token is given. */
function machineIn(state: Exclude<ServerState, 'closed'>, v: PolicyValues = {}): { m: ServerMachine; p: TestPolicy } {
  const p = policy(state === 'awaitAuth' ? { token: TOKEN, ...v } : v)
  const m = new ServerMachine(p)
  if (state === 'awaitHello') return { m, p }
  m.receive(HELLO)
  if (p.token && state === 'ready') m.receive({ type: 'auth', mac: clientMac(p.token, BINDING) })
  if (m.state !== state) throw new Error(`could not drive the machine to ${state} (it is in ${m.state})`)
  return { m, p }
}

/** The actions with Buffers and bigints as plain values, so tap's `same` compares them readably. */
const kinds = (actions: ServerAction[]): string[] => actions.map((a) => a.kind)

function failOf(actions: ServerAction[]): Extract<ServerAction, { kind: 'fail' }> | undefined {
  return actions.find((a): a is Extract<ServerAction, { kind: 'fail' }> => a.kind === 'fail')
}

function welcomeOf(actions: ServerAction[]) {
  const a = actions[0]
  return a?.kind === 'send' && a.message.type === 'welcome' ? a.message : undefined
}

t.test('before HELLO, every message but HELLO is SFM_ERR_UNEXPECTED [M-STATE-1]', async (t) => {
  for (const tag of ALL_TAGS) {
    if (tag === 'hello') continue
    const { m, p } = machineIn('awaitHello')
    const actions = m.receive(SAMPLES[tag])
    t.same(kinds(actions), ['fail'], `${tag}: one fail action`)
    t.equal(failOf(actions)?.code, 'SFM_ERR_UNEXPECTED', `${tag}: SFM_ERR_UNEXPECTED`)
    t.equal(m.state, 'closed', `${tag}: closed`)
    t.equal(p.claims.length, 0, `${tag}: the mirror is not claimed`)
  }
})

t.test('in AWAIT_AUTH, every message but AUTH is SFM_ERR_UNEXPECTED, HELLO twice included', async (t) => {
  for (const tag of ALL_TAGS) {
    if (tag === 'auth') continue
    const { m, p } = machineIn('awaitAuth')
    const actions = m.receive(SAMPLES[tag])
    t.same(kinds(actions), ['fail'], `${tag}: one fail action`)
    t.equal(failOf(actions)?.code, 'SFM_ERR_UNEXPECTED', `${tag}: SFM_ERR_UNEXPECTED`)
    t.equal(m.state, 'closed', `${tag}: closed`)
    t.equal(p.claims.length, 0, `${tag}: an unauthenticated peer never claims the mirror`)
  }
})

t.test('in READY, every message type has its row of the table', async (t) => {
  type Row = { tag: MessageTag; expect: 'request' | 'pong' | 'ignore' | 'unexpected' }
  const rows: Row[] = ALL_TAGS.map((tag): Row => {
    if (REQUESTS.includes(tag)) return { tag, expect: 'request' }
    if (tag === 'ping') return { tag, expect: 'pong' }
    if (tag === 'pong' || tag === 'error') return { tag, expect: 'ignore' } // error here has id 7
    return { tag, expect: 'unexpected' } // hello (twice), auth, and the server-direction messages
  })
  t.same(
    rows.filter((r) => r.expect === 'unexpected').map((r) => r.tag).sort(),
    ['auth', 'hello', ...SERVER_DIRECTION].sort(),
    'the unexpected rows are HELLO, AUTH and every server-direction message',
  )
  for (const { tag, expect } of rows) {
    for (const token of [null, TOKEN]) {
      const how = `${tag} (${token ? 'after AUTH' : 'no token'})`
      const { m } = machineIn('ready', { token })
      const msg = SAMPLES[tag]
      const actions = m.receive(msg)
      switch (expect) {
        case 'request':
          t.same(actions, [{ kind: 'request', message: msg }], `${how}: passes through as a request`)
          t.equal(actions[0]?.kind === 'request' && actions[0].message, msg, `${how}: the same message object`)
          t.equal(m.state, 'ready', `${how}: stays ready`)
          break
        case 'pong':
          t.same(actions, [{ kind: 'send', message: { type: 'pong' } }], `${how}: PONG [M-PING-1]`)
          t.equal(m.state, 'ready', `${how}: stays ready`)
          break
        case 'ignore':
          t.same(actions, [], `${how}: ignored`)
          t.equal(m.state, 'ready', `${how}: stays ready`)
          break
        case 'unexpected':
          t.same(kinds(actions), ['fail'], `${how}: one fail action`)
          t.equal(failOf(actions)?.code, 'SFM_ERR_UNEXPECTED', `${how}: SFM_ERR_UNEXPECTED`)
          t.equal(m.state, 'closed', `${how}: closed`)
          break
      }
    }
  }
})

t.test('ERROR with request id 0 closes the session in every state [M-LIFE-4]', async (t) => {
  for (const state of ['awaitHello', 'awaitAuth', 'ready'] as const) {
    const { m } = machineIn(state)
    const actions = m.receive({ type: 'error', requestId: 0, code: 13, message: 'bye' })
    t.same(kinds(actions), ['closed'], `${state}: a closed action, no ERROR back`)
    t.match(actions[0], { kind: 'closed', reason: /bye/ }, `${state}: the reason carries the client's text`)
    t.equal(m.state, 'closed', `${state}: closed`)
  }
})

t.test('after closed, nothing more: every message and fail() give no actions', async (t) => {
  const closers: [string, (m: ServerMachine) => void][] = [
    ['ERROR id 0', (m) => m.receive({ type: 'error', requestId: 0, code: 17, message: '' })],
    ['SFM_ERR_UNEXPECTED', (m) => m.receive(SAMPLES.ok)],
    ['fail()', (m) => m.fail('SFM_ERR_TIMEOUT', 'timer')],
  ]
  for (const [how, close] of closers) {
    const { m } = machineIn('ready')
    close(m)
    t.equal(m.state, 'closed', `${how}: closed`)
    for (const tag of ALL_TAGS) t.same(m.receive(SAMPLES[tag]), [], `${how}, then ${tag}: nothing`)
    t.same(m.fail('SFM_ERR_SHUTDOWN', 'again'), [], `${how}, then fail(): nothing`)
    t.equal(m.state, 'closed', `${how}: still closed`)
  }
})

t.test('fail() ends the session with one fail action', async (t) => {
  for (const state of ['awaitHello', 'awaitAuth', 'ready'] as const) {
    const { m } = machineIn(state)
    t.same(m.fail('SFM_ERR_TIMEOUT', 'handshake not finished'), [
      { kind: 'fail', code: 'SFM_ERR_TIMEOUT', message: 'handshake not finished' },
    ], state)
    t.equal(m.state, 'closed')
  }
})

t.test('HELLO: versions and hash algorithms [M-HELLO-3]', async (t) => {
  type Row = { name: string; hello: Partial<Hello>; code?: 'SFM_ERR_VERSION' | 'SFM_ERR_HASH_ALGO'; algo?: number; version?: number }
  const rows: Row[] = [
    { name: 'exactly version 1', hello: { minVersion: 1, maxVersion: 1 }, algo: 1, version: 1 },
    { name: 'versions 0..1', hello: { minVersion: 0, maxVersion: 1 }, algo: 1, version: 1 },
    { name: 'versions 1..2', hello: { minVersion: 1, maxVersion: 2 }, algo: 1, version: 2 },
    { name: 'exactly version 2', hello: { minVersion: 2, maxVersion: 2 }, algo: 1, version: 2 },
    { name: 'versions 2..3', hello: { minVersion: 2, maxVersion: 3 }, algo: 1, version: 2 },
    { name: 'versions 1..9', hello: { minVersion: 1, maxVersion: 9 }, algo: 1, version: 2 },
    { name: 'versions 0..65535', hello: { minVersion: 0, maxVersion: 0xffff }, algo: 1, version: 2 },
    { name: 'version 0 only', hello: { minVersion: 0, maxVersion: 0 }, code: 'SFM_ERR_VERSION' },
    { name: 'versions 3..4', hello: { minVersion: 3, maxVersion: 4 }, code: 'SFM_ERR_VERSION' },
    { name: 'version 65535 only', hello: { minVersion: 0xffff, maxVersion: 0xffff }, code: 'SFM_ERR_VERSION' },
    { name: 'algorithm 1 after others', hello: { algos: [7, 2, 1] }, algo: 1, version: 2 },
    { name: 'algorithms 2 and 3 only', hello: { algos: [2, 3] }, code: 'SFM_ERR_HASH_ALGO' },
    { name: 'algorithm 0 only', hello: { algos: [0] }, code: 'SFM_ERR_HASH_ALGO' },
    { name: 'no common version and no common algorithm', hello: { minVersion: 3, maxVersion: 3, algos: [9] }, code: 'SFM_ERR_VERSION' },
  ]
  for (const row of rows) {
    const { m, p } = machineIn('awaitHello')
    const actions = m.receive({ ...HELLO, ...row.hello })
    if (row.code) {
      t.same(kinds(actions), ['fail'], `${row.name}: one fail action`)
      t.equal(failOf(actions)?.code, row.code, `${row.name}: ${row.code}`)
      t.equal(m.state, 'closed', `${row.name}: closed`)
      t.equal(p.claims.length, 0, `${row.name}: the mirror is not claimed`)
    } else {
      t.same(kinds(actions), ['send', 'ready'], `${row.name}: WELCOME, then ready`)
      t.equal(welcomeOf(actions)?.version, row.version, `${row.name}: version ${row.version}, the highest both speak`)
      t.equal(welcomeOf(actions)?.algo, row.algo, `${row.name}: algorithm ${row.algo}`)
      t.equal(m.state, 'ready', `${row.name}: ready`)
    }
  }
  // The text should name what the server supports.
  const { m } = machineIn('awaitHello')
  t.match(failOf(m.receive({ ...HELLO, minVersion: 3, maxVersion: 4 }))?.message, /\b1\.\.2\b.*3\.\.4/, 'the text names versions 1..2 and the range offered')
  const { m: m2 } = machineIn('awaitHello')
  t.match(failOf(m2.receive({ ...HELLO, algos: [2, 3] }))?.message, /XXH3-128/, 'the text names XXH3-128')
})

t.test('DIGEST? is a request from version 2 on, an unknown type on version 1 [M-DIGEST-2]', async (t) => {
  const query = { type: 'digestQuery', requestId: 5 } as const
  const v2 = machineIn('awaitHello').m
  v2.receive({ ...HELLO, minVersion: 1, maxVersion: 2 })
  t.same(v2.receive(query), [{ kind: 'request', message: query }], 'version 2: handed to the session')
  t.equal(v2.state, 'ready')
  const v1 = machineIn('awaitHello').m
  v1.receive({ ...HELLO, minVersion: 1, maxVersion: 1 })
  t.match(v1.receive(query), [{ kind: 'fail', code: 'SFM_ERR_UNKNOWN_TYPE', message: /version 1/ }], 'version 1: SFM_ERR_UNKNOWN_TYPE')
  t.equal(v1.state, 'closed')
})

t.test('WELCOME carries the policy values', async (t) => {
  const { m } = machineIn('awaitHello')
  t.same(m.receive(HELLO), [
    {
      kind: 'send',
      message: {
        type: 'welcome',
        version: 2,
        algo: 1,
        authRequired: false,
        serverNonce: SERVER_NONCE,
        mirrorId: MIRROR_ID,
        maxOpenUploads: 32,
        maxInflight: 4096,
        keepaliveMs: 15_000,
      },
    },
    { kind: 'ready', clientId: CLIENT_ID, clientName: 'test-client' },
  ])
})

t.test('without a token, a client off loopback is refused unless the server is insecure [M-AUTH-3]', async (t) => {
  type Row = { name: string; v: PolicyValues; refused: boolean }
  const rows: Row[] = [
    { name: 'loopback', v: { peerIsLoopback: true }, refused: false },
    { name: 'loopback, insecure', v: { peerIsLoopback: true, insecure: true }, refused: false },
    { name: 'not loopback', v: { peerIsLoopback: false }, refused: true },
    { name: 'not loopback, insecure', v: { peerIsLoopback: false, insecure: true }, refused: false },
    { name: 'not loopback, with a token', v: { peerIsLoopback: false, token: TOKEN }, refused: false },
  ]
  for (const { name, v, refused } of rows) {
    const { m, p } = machineIn('awaitHello', v)
    const actions = m.receive(HELLO)
    if (refused) {
      t.same(kinds(actions), ['fail'], `${name}: refused`)
      const f = failOf(actions)
      t.equal(f?.code, 'SFM_ERR_AUTH_REQUIRED', `${name}: SFM_ERR_AUTH_REQUIRED`)
      t.match(f?.message, /--token-file/, `${name}: the text says how to set a token`)
      t.match(f?.message, /SFM_TOKEN/, `${name}: and names the environment variable`)
      t.equal(p.claims.length, 0, `${name}: the mirror is not claimed`)
      t.equal(m.state, 'closed')
    } else {
      t.equal(welcomeOf(actions)?.type, 'welcome', `${name}: WELCOME`)
      t.equal(welcomeOf(actions)?.authRequired, v.token !== undefined, `${name}: AUTH_REQUIRED only with a token`)
      t.equal(m.state, v.token ? 'awaitAuth' : 'ready', `${name}: next state`)
    }
  }
})

t.test('with a token: WELCOME sets AUTH_REQUIRED and AUTH decides [M-AUTH-1]', async (t) => {
  t.test('HELLO gets WELCOME with AUTH_REQUIRED and nothing else', async (t) => {
    const { m, p } = machineIn('awaitHello', { token: TOKEN })
    const actions = m.receive(HELLO)
    t.same(kinds(actions), ['send'])
    t.equal(welcomeOf(actions)?.authRequired, true)
    t.equal(m.state, 'awaitAuth')
    t.equal(p.claims.length, 0, 'the mirror is not claimed before the proof')
  })

  t.test('the right MAC gets AUTH_OK whose MAC verifies with serverMac, then ready', async (t) => {
    const { m, p } = machineIn('awaitAuth')
    const actions = m.receive({ type: 'auth', mac: clientMac(TOKEN, BINDING) })
    t.same(kinds(actions), ['send', 'ready'])
    const sent = actions[0]
    const mac = sent?.kind === 'send' && sent.message.type === 'authOk' ? sent.message.mac : undefined
    t.ok(mac, 'AUTH_OK')
    t.same(mac, serverMac(TOKEN, BINDING), 'its MAC is serverMac(token, nonces, client id)')
    t.notSame(mac, clientMac(TOKEN, BINDING), 'and not the client MAC echoed back')
    t.same(actions[1], { kind: 'ready', clientId: CLIENT_ID, clientName: 'test-client' })
    t.equal(m.state, 'ready')
    t.same(p.claims, [{ clientId: CLIENT_ID, clientName: 'test-client' }], 'the mirror is claimed once, after the proof')
  })

  const wrong: [string, Buffer][] = [
    ['random bytes', bytes(32, 0x42)],
    ['a MAC with another token', clientMac(Buffer.from('another token'), BINDING)],
    ['the server MAC instead of the client MAC', serverMac(TOKEN, BINDING)],
    ['a MAC for another server nonce (a replay)', clientMac(TOKEN, { ...BINDING, serverNonce: bytes(16, 0x01) })],
    ['a MAC for another client id', clientMac(TOKEN, { ...BINDING, clientId: bytes(16, 0x02) })],
    ['a MAC one byte short', clientMac(TOKEN, BINDING).subarray(0, 31)],
    ['an empty MAC', Buffer.alloc(0)],
  ]
  for (const [name, mac] of wrong) {
    t.test(`${name} is SFM_ERR_AUTH_FAILED`, async (t) => {
      const { m, p } = machineIn('awaitAuth')
      const actions = m.receive({ type: 'auth', mac })
      t.same(kinds(actions), ['fail'])
      t.equal(failOf(actions)?.code, 'SFM_ERR_AUTH_FAILED')
      t.equal(m.state, 'closed')
      t.equal(p.claims.length, 0, 'the mirror is not claimed')
    })
  }
})

t.test('claim() naming a holder is SFM_ERR_BUSY, after and only after authentication [M-SEM-1]', async (t) => {
  t.test('with a token: HELLO and a wrong AUTH never reach claim()', async (t) => {
    const { m, p } = machineIn('awaitHello', { token: TOKEN, holder: 'the-owner' })
    t.same(kinds(m.receive(HELLO)), ['send'], 'WELCOME, no BUSY yet')
    t.equal(p.claims.length, 0)
    t.equal(failOf(m.receive({ type: 'auth', mac: bytes(32, 0) }))?.code, 'SFM_ERR_AUTH_FAILED', 'a wrong MAC is AUTH_FAILED, not BUSY')
    t.equal(p.claims.length, 0, 'claim() was never called')
  })

  t.test('with a token: the right AUTH, then BUSY naming the holder', async (t) => {
    const { m, p } = machineIn('awaitAuth', { holder: 'the-owner' })
    const actions = m.receive(SAMPLES.auth)
    t.same(kinds(actions), ['fail'], 'ERROR BUSY instead of AUTH_OK, and no ready (PROTOCOL.md 8.1, 9.1)')
    const f = failOf(actions)
    t.equal(f?.code, 'SFM_ERR_BUSY')
    t.match(f?.message, /the-owner/, 'the text names the client that holds the mirror')
    t.same(p.claims, [{ clientId: CLIENT_ID, clientName: 'test-client' }])
    t.equal(m.state, 'closed')
    t.same(m.receive(SAMPLES.list), [], 'nothing more')
  })

  t.test('without a token: HELLO is answered with BUSY alone, no WELCOME (PROTOCOL.md 8.1)', async (t) => {
    const { m, p } = machineIn('awaitHello', { holder: 'the-owner' })
    const actions = m.receive(HELLO)
    t.same(p.claims, [{ clientId: CLIENT_ID, clientName: 'test-client' }], 'claimed at HELLO: there is no proof to wait for')
    t.equal(failOf(actions)?.code, 'SFM_ERR_BUSY', 'BUSY')
    t.match(failOf(actions)?.message, /the-owner/, 'the text names the holder')
    t.notOk(actions.some((a) => a.kind === 'ready'), 'never ready')
    t.equal(m.state, 'closed')
    // Section 8.1: ERROR BUSY (no WELCOME). A WELCOME before the ERROR would tell the client the session
    // is ready (section 4), and Connection.open would resolve on it before the ERROR arrives.
    t.same(kinds(actions), ['fail'], 'the only action is the fail: no WELCOME before BUSY')
  })
})

t.test('a claim that succeeds gives the ready action with the client id and name', async (t) => {
  const { m, p } = machineIn('awaitHello')
  const actions = m.receive({ ...HELLO, clientName: '' })
  t.same(actions[1], { kind: 'ready', clientId: CLIENT_ID, clientName: '' }, 'an empty name is kept as is')
  t.equal(p.claims.length, 1)
  t.equal(m.state, 'ready')
})
