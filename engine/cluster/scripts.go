package cluster

import "github.com/redis/go-redis/v9"

// The directory's Lua scripts. Each runs atomically in Redis, which is
// what makes a name or a room's two places hold across nodes: two nodes
// racing for one token are serialized by Redis, and only the first claim
// finds both users free. docs/CLUSTER.md lists the keys.
//
// Scripts see only what Redis may: a user's key is the hash of the
// folded name, a token's the hash of the token, the name as spelled is
// sealed, and the tag binding a token to its holder is checked by the
// claiming node, not here (trust.go). A record a Redis writer edited
// must not make a script fail, which the node would take for a lost
// link, so fields that may be missing are checked before use.
//
// Scripts build some key names from the prefix (ARGV) rather than taking
// them all in KEYS: the directory runs on one Redis server (or one
// primary), not on a sharded Redis Cluster; see docs/CLUSTER.md.

// loginScript claims a name and a token for a user of this node, and
// the hash of its resume key, if it has one (rk, empty when not).
// KEYS: user, token, node's user set, node's lease.
// ARGV: sealed name, hashed name, hashed token, node, token tag, rk,
// prefix, client (the protocol its client speaks, tagged: clientField).
var loginScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[4]) == 0 then return 'unavailable' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'name_taken' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'unavailable' end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'tok', ARGV[3], 'tag', ARGV[5], 'node', ARGV[4], 'peer', '', 'pair', '0', 'rk', ARGV[6], 'cl', ARGV[8])
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[6] ~= '' then redis.call('SET', ARGV[7] .. 'resume:' .. ARGV[6], ARGV[2]) end
redis.call('SADD', KEYS[3], ARGV[2])
return 'ok'
`)

// A user's record names the resume keys its session is found by: rk,
// its newest, and ru, the one its last resume used, kept until its
// client shows it read the answer (hub's usedKey), empty or missing for
// none. A resume key points to a record only while one of the two
// names it (findScript): one left behind by a write that failed
// matches nothing.

// forgetLua is Lua that deletes a user's record and the keys that point
// to it (its token and its resume keys), given the record's key k, its
// hashed name hn, the fields tok, rk and ru read from it, and the
// prefix p.
const forgetLua = `
local function forget(k, hn, tok, rk, ru, p)
  redis.call('DEL', k)
  if tok and redis.call('GET', p .. 'token:' .. tok) == hn then redis.call('DEL', p .. 'token:' .. tok) end
  for _, r in ipairs({rk or '', ru or ''}) do
    if r ~= '' and redis.call('GET', p .. 'resume:' .. r) == hn then redis.call('DEL', p .. 'resume:' .. r) end
  end
end
`

// logoutScript frees a user's name, token and resume keys, if they are
// still this node's user's.
// KEYS: user, token, node's user set. ARGV: hashed name, hashed token,
// node, prefix.
var logoutScript = redis.NewScript(forgetLua + `
local rec = redis.call('HMGET', KEYS[1], 'tok', 'node', 'rk', 'ru')
if rec[1] == ARGV[2] and rec[2] == ARGV[3] then forget(KEYS[1], ARGV[1], rec[1], rec[3], rec[4], ARGV[4]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('SREM', KEYS[3], ARGV[1])
return 'ok'
`)

// rekeyScript replaces the resume keys a user of this node is found by
// as a resume gives it a fresh one and keeps the one it used (ru, empty
// for none), and the protocol its client speaks, as a resume may change
// it. The newest key until now and the key an earlier resume used stop
// pointing to the record, but the one used.
// KEYS: user. ARGV: hashed name, node, old rk, new rk, prefix, client,
// used rk.
var rekeyScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'node', 'rk', 'ru')
if rec[1] ~= ARGV[2] or rec[2] ~= ARGV[3] then return 'stale' end
for _, r in ipairs({ARGV[3], rec[3] or ''}) do
  if r ~= '' and r ~= ARGV[7] and redis.call('GET', ARGV[5] .. 'resume:' .. r) == ARGV[1] then redis.call('DEL', ARGV[5] .. 'resume:' .. r) end
end
redis.call('SET', ARGV[5] .. 'resume:' .. ARGV[4], ARGV[1])
if ARGV[7] ~= '' then redis.call('SET', ARGV[5] .. 'resume:' .. ARGV[7], ARGV[1]) end
redis.call('HSET', KEYS[1], 'rk', ARGV[4], 'ru', ARGV[7], 'cl', ARGV[6])
return 'ok'
`)

// retireScript stops a resume key a user's last resume used pointing
// to the record, once its client showed it read the answer; the record
// stops naming it if it still does. Wherever the session is (a park
// carries only a key its hub keeps), and whatever came since: a rekey
// that named another used key retired this one already.
// KEYS: user. ARGV: hashed name, used rk, prefix.
var retireScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'rk', 'ru')
if rec[1] == ARGV[2] then return 'ok' end
if redis.call('GET', ARGV[3] .. 'resume:' .. ARGV[2]) == ARGV[1] then redis.call('DEL', ARGV[3] .. 'resume:' .. ARGV[2]) end
if rec[2] == ARGV[2] then redis.call('HSET', KEYS[1], 'ru', '') end
return 'ok'
`)

// retokenScript replaces a user's token.
// KEYS: user, old token, new token.
// ARGV: hashed name, old hashed token, new hashed token, node, new tag.
var retokenScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'tok', 'node')
if rec[1] ~= ARGV[2] or rec[2] ~= ARGV[4] then return 'unavailable' end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'unavailable' end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[1], 'tok', ARGV[3], 'tag', ARGV[5])
return 'ok'
`)

// claimScript pairs the asker with the token's holder if both are free
// and the holder's node is alive, and numbers the pairing.
// KEYS: asker, token, this node's lease.
// ARGV: asker's hashed name, node, prefix, a starting pairing number.
// Returns an error code, or {'ok', holder's hashed name, holder's sealed
// name, holder's node, pair id, holder's token tag, holder node's lease,
// holder's client}.
// The claiming node checks the tag and the seal, and undoes the claim
// (unclaimScript) if either fails.
var claimScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[3]) == 0 then return {'unavailable'} end
local asker = redis.call('HMGET', KEYS[1], 'node', 'peer')
if asker[1] ~= ARGV[2] then return {'unavailable'} end
if asker[2] ~= '' then return {'already_paired'} end
local hk = redis.call('GET', KEYS[2])
if not hk then return {'unknown_token'} end
if hk == ARGV[1] then return {'self_connect'} end
local hkey = ARGV[3] .. 'user:' .. hk
local holder = redis.call('HMGET', hkey, 'name', 'node', 'peer', 'tag', 'cl')
if not holder[1] or not holder[2] then return {'unknown_token'} end
-- A holder parked between nodes (node '') is still paired, or is on
-- its way to a node that will pair it: come back in a moment.
if holder[2] == '' then
  if holder[3] and holder[3] ~= '' then return {'room_full'} end
  return {'unavailable'}
end
local lease = redis.call('GET', ARGV[3] .. 'lease:' .. holder[2])
if not lease then return {'unknown_token'} end
if holder[3] ~= '' then return {'room_full'} end
-- Pairing numbers must not repeat after Redis restarts empty, or a
-- notice about an old pairing could end a new one: a fresh counter
-- starts from the claimant's clock in microseconds.
redis.call('SET', ARGV[3] .. 'pairseq', ARGV[4], 'NX')
-- (%d, not tostring: Lua would write a large number as 1.7e+15.)
local id = string.format('%d', redis.call('INCR', ARGV[3] .. 'pairseq'))
redis.call('HSET', KEYS[1], 'peer', hk, 'pair', id)
redis.call('HSET', hkey, 'peer', ARGV[1], 'pair', id)
return {'ok', hk, holder[1], holder[2], id, holder[4] or '', lease, holder[5] or ''}
`)

// unclaimScript undoes a claim whose holder's record failed the
// claiming node's checks: both records are freed if they are still in
// that pairing.
// KEYS: asker. ARGV: holder's hashed name, prefix, pair id.
var unclaimScript = redis.NewScript(`
local hkey = ARGV[2] .. 'user:' .. ARGV[1]
for _, k in ipairs({KEYS[1], hkey}) do
  if redis.call('HGET', k, 'pair') == ARGV[3] then
    redis.call('HSET', k, 'peer', '', 'pair', '0')
  end
end
return 'ok'
`)

// releaseScript marks a user of this node as out of one pairing.
// KEYS: user. ARGV: pair id, node.
var releaseScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'pair', 'node')
if rec[1] == ARGV[1] and rec[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'peer', '', 'pair', '0')
end
return 'ok'
`)

// registerScript writes a user's record back after this node lost the
// directory (Redis restarted, or this node's lease lapsed). A name that
// a live node gave someone else meanwhile, or that is parked, stays
// theirs.
// KEYS: user, token, node's user set.
// ARGV: sealed name, hashed name, hashed token, node, partner's hashed
// name, pair, prefix, token tag, rk, client, ru (the used key, empty for
// none).
var registerScript = redis.NewScript(`
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[4] and (owner == '' or redis.call('EXISTS', ARGV[7] .. 'lease:' .. owner) == 1) then
  return 'name_taken'
end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'tok', ARGV[3], 'tag', ARGV[8], 'node', ARGV[4], 'peer', ARGV[5], 'pair', ARGV[6], 'rk', ARGV[9], 'cl', ARGV[10], 'ru', ARGV[11])
redis.call('PERSIST', KEYS[1])
redis.call('SET', KEYS[2], ARGV[2])
if ARGV[9] ~= '' then redis.call('SET', ARGV[7] .. 'resume:' .. ARGV[9], ARGV[2]) end
if ARGV[11] ~= '' then redis.call('SET', ARGV[7] .. 'resume:' .. ARGV[11], ARGV[2]) end
redis.call('SADD', KEYS[3], ARGV[2])
return 'ok'
`)

// dropScript removes one user of this node that is no longer logged in.
// KEYS: user, node's user set. ARGV: hashed name, node, prefix.
var dropScript = redis.NewScript(forgetLua + `
local rec = redis.call('HMGET', KEYS[1], 'tok', 'node', 'rk', 'ru')
if rec[2] == ARGV[2] then forget(KEYS[1], ARGV[1], rec[1], rec[3], rec[4], ARGV[3]) end
redis.call('SREM', KEYS[2], ARGV[1])
return 'ok'
`)

// reapScript removes up to a batch of a dead node's users: their names
// and tokens are freed, and a partner's record on another node is freed
// too (that node tells its user when it sees the lease gone). Each
// resume key (the newest, and the one the last resume used if kept) is
// left marked '!' for a while (ttl ms, none for 0), so
// that a resume of it is told its session ended with its node, not
// that the key is wrong; a node that was only stalled, writing its
// users back, writes the key over (registerScript). It returns how
// many it took, 0 when the node is gone entirely, -1 when the node is
// alive after all.
// KEYS: dead node's user set, its lease, the node set.
// ARGV: dead node, prefix, batch size, ttl.
var reapScript = redis.NewScript(forgetLua + `
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local keys = redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))
for _, k in ipairs(keys) do
  local ukey = ARGV[2] .. 'user:' .. k
  local rec = redis.call('HMGET', ukey, 'node', 'tok', 'peer', 'pair', 'rk', 'ru')
  if rec[1] == ARGV[1] then
    forget(ukey, k, rec[2], rec[5], rec[6], ARGV[2])
    if tonumber(ARGV[4]) > 0 then
      for _, r in ipairs({rec[5] or '', rec[6] or ''}) do
        if r ~= '' then redis.call('SET', ARGV[2] .. 'resume:' .. r, '!', 'PX', ARGV[4], 'NX') end
      end
    end
    if rec[3] and rec[3] ~= '' then
      local pkey = ARGV[2] .. 'user:' .. rec[3]
      if redis.call('HGET', pkey, 'pair') == rec[4] then
        redis.call('HSET', pkey, 'peer', '', 'pair', '0')
      end
    end
  end
end
if #keys == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return #keys
`)

// Sessions parked between nodes (docs/CLUSTER.md, "Resume on any
// node"). A parked session's record stays, with node '' (a claim of its
// token answers room_full while it is paired, unavailable while not),
// and beside it a park hash: who sealed it (by), the sealed session
// (blob), its moves (gen), the id of its last message relayed (lastid,
// sealed, for a page that numbers them; beside the blob so that the
// blob stays in a form every node since version 2 reads, see
// writePark), which side of its pairing it is (holder), what its
// partner went away without (untold), the key its last resume used
// (used) and what it was told of its pairing while away (told), sealed
// beside it too, and what
// its queue may still take: n
// messages queued, cost counted against max (resume.buffer), and wait
// and size, what a refusal says is waiting. The queue is a list of
// sealed messages. Every key of a parked session expires with its
// window (plus grace while it is paired, for its partner's node to
// tell the partner): nothing is left if nobody takes it up.

// parkLua is Lua that sets the expiry of a parked session's keys:
// record k, park hash pk, queue qk, and its token and resume keys (rk,
// ru).
const parkLua = `
local function expire(k, pk, qk, hn, tok, rk, ru, p, ttl)
  redis.call('PEXPIRE', k, ttl)
  redis.call('PEXPIRE', pk, ttl)
  if redis.call('EXISTS', qk) == 1 then redis.call('PEXPIRE', qk, ttl) end
  if tok and redis.call('GET', p .. 'token:' .. tok) == hn then redis.call('PEXPIRE', p .. 'token:' .. tok, ttl) end
  for _, r in ipairs({rk or '', ru or ''}) do
    if r ~= '' and redis.call('GET', p .. 'resume:' .. r) == hn then redis.call('PEXPIRE', p .. 'resume:' .. r, ttl) end
  end
end
`

// parkScript parks a user of this node.
// KEYS: user, park, queue, node's user set.
// ARGV: hashed name, node, sealed session, gen, max, cost, wait, size,
// ttl in ms, prefix, sealed last id (empty for none), sealed holder mark
// (empty when the session connected to its partner, or has none),
// sealed untold (empty for none), sealed used key (empty for none),
// sealed told (empty for none).
var parkScript = redis.NewScript(parkLua + `
local rec = redis.call('HMGET', KEYS[1], 'node', 'tok', 'rk', 'ru')
if rec[1] ~= ARGV[2] then return 'gone' end
redis.call('HSET', KEYS[1], 'node', '')
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], 'by', ARGV[2], 'blob', ARGV[3], 'gen', ARGV[4], 'n', '0', 'max', ARGV[5], 'cost', ARGV[6], 'wait', ARGV[7], 'size', ARGV[8])
if ARGV[11] ~= '' then redis.call('HSET', KEYS[2], 'lastid', ARGV[11]) end
if ARGV[12] and ARGV[12] ~= '' then redis.call('HSET', KEYS[2], 'holder', ARGV[12]) end
if ARGV[13] and ARGV[13] ~= '' then redis.call('HSET', KEYS[2], 'untold', ARGV[13]) end
if ARGV[14] and ARGV[14] ~= '' then redis.call('HSET', KEYS[2], 'used', ARGV[14]) end
if ARGV[15] and ARGV[15] ~= '' then redis.call('HSET', KEYS[2], 'told', ARGV[15]) end
expire(KEYS[1], KEYS[2], KEYS[3], ARGV[1], rec[2], rec[3], rec[4], ARGV[10], tonumber(ARGV[9]))
return 'ok'
`)

// leaseOfLua is Lua that reads the lease of the node a record names,
// empty for none.
const leaseOfLua = `
local function leaseOf(p, node)
  if not node or node == '' then return '' end
  return redis.call('GET', p .. 'lease:' .. node) or ''
end
`

// findScript finds the session a resume key belongs to: its newest, or
// the one its last resume used.
// KEYS: the resume key. ARGV: prefix, rk.
// Returns {} when no session has it, {'!'} when its session ended with
// its node (reapScript), else {hashed name, node (empty when
// parked), that node's lease}, and when it is parked, the park's
// sealer (by), sealed session, gen, and its sealed last id, holder mark,
// untold, used key and told (each empty for none).
var findScript = redis.NewScript(leaseOfLua + `
local hn = redis.call('GET', KEYS[1])
if not hn then return {} end
if hn == '!' then return {'!'} end
local rec = redis.call('HMGET', ARGV[1] .. 'user:' .. hn, 'node', 'rk', 'ru')
if not rec[1] or rec[2] ~= ARGV[2] and rec[3] ~= ARGV[2] then return {} end
if rec[1] ~= '' then return {hn, rec[1], leaseOf(ARGV[1], rec[1])} end
local p = redis.call('HMGET', ARGV[1] .. 'park:' .. hn, 'by', 'blob', 'gen', 'lastid', 'holder', 'untold', 'used', 'told')
if not p[2] then return {} end
return {hn, '', '', p[1], p[2], p[3], p[4] or '', p[5] or '', p[6] or '', p[7] or '', p[8] or ''}
`)

// holderScript says where a user's session is, for a login of the same
// account elsewhere that would evict it.
// KEYS: user. ARGV: prefix.
// Returns {} when there is no such user, else {node (empty when
// parked), that node's lease}.
var holderScript = redis.NewScript(leaseOfLua + `
local node = redis.call('HGET', KEYS[1], 'node')
if not node then return {} end
return {node, leaseOf(ARGV[1], node)}
`)

// evictParkedScript ends a parked session for a login of its account
// elsewhere: its record, token, resume keys, park and queue go.
// KEYS: user, park, queue. ARGV: hashed name, prefix.
// Returns {'gone'}, {'moved'} (taken up meanwhile: ask its node), or
// {'ok', the park's sealed session, its gen, pair id, the partner's node
// (empty when it is parked too, or there is none), that node's lease,
// how many messages were queued for it}.
var evictParkedScript = redis.NewScript(forgetLua + leaseOfLua + `
local rec = redis.call('HMGET', KEYS[1], 'node', 'tok', 'rk', 'peer', 'pair', 'ru')
if not rec[1] then return {'gone'} end
if rec[1] ~= '' then return {'moved'} end
local p = redis.call('HMGET', KEYS[2], 'blob', 'gen')
local pnode, lease = '', ''
if rec[4] and rec[4] ~= '' then
  local pr = redis.call('HMGET', ARGV[2] .. 'user:' .. rec[4], 'node', 'pair')
  if pr[2] == rec[5] and pr[1] then pnode, lease = pr[1], leaseOf(ARGV[2], pr[1]) end
end
forget(KEYS[1], ARGV[1], rec[2], rec[3], rec[6], ARGV[2])
local queued = redis.call('LLEN', KEYS[3])
redis.call('DEL', KEYS[2], KEYS[3])
return {'ok', p[1] or '', p[2] or '', rec[5] or '0', pnode, lease, tostring(queued)}
`)

// claimParkedScript takes a parked session for this node, as parked
// at gen, with what was queued for it, writes the name sealed by this
// node in its record, and says where its partner is.
// KEYS: user, park, queue, node's user set, node's lease.
// ARGV: hashed name, node, prefix, gen, sealed name, the pairing the
// park holds ('0' for none).
// Returns {'unavailable'}, {'gone'}, {'owned'} (not parked as gen), or
// {'ok', paired, pair, partner's node, its lease, partner's park gen
// and ms left when it is parked too, how the pairing ended if it did
// while parked (the park's left, sealed, or empty), the partner's
// client (its record's), the session's own client, queued...}.
// paired is '1' while the partner's record names the pairing; '2' when
// it does not, yet the partner is on another node (the claiming node
// checks its lease) and nothing says how the pairing ended: the
// partner left it so lately that its node holds how (and its last
// messages) still, and tells the node that takes the session up when
// asked, so the session's record keeps its pairing until then; '0'
// otherwise, the record's pairing freed. A record that names a pairing
// the park does not hold (a connect that reached it as the session was
// parked, after its node had let it go) is freed: the session brings
// no such pairing, and would be room_full to everyone.
var claimParkedScript = redis.NewScript(leaseOfLua + `
if redis.call('EXISTS', KEYS[5]) == 0 then return {'unavailable'} end
local rec = redis.call('HMGET', KEYS[1], 'node', 'peer', 'pair', 'tok', 'rk', 'cl', 'ru')
if not rec[1] then return {'gone'} end
if rec[1] ~= '' or redis.call('HGET', KEYS[2], 'gen') ~= ARGV[4] then return {'owned'} end
local q = redis.call('LRANGE', KEYS[3], 0, -1)
local left = redis.call('HGET', KEYS[2], 'left') or ''
local paired, pnode, peerlease, pgen, pttl, pclient = '0', '', '', '', '', ''
if rec[2] and rec[2] ~= '' then
  local pr = redis.call('HMGET', ARGV[3] .. 'user:' .. rec[2], 'node', 'peer', 'pair', 'cl')
  if rec[3] ~= ARGV[6] then
    redis.call('HSET', KEYS[1], 'peer', '', 'pair', '0')
  elseif pr[1] and pr[2] == ARGV[1] and pr[3] == rec[3] then
    paired, pnode, pclient = '1', pr[1], pr[4] or ''
    if pnode == '' then
      pgen = redis.call('HGET', ARGV[3] .. 'park:' .. rec[2], 'gen') or ''
      pttl = tostring(redis.call('PTTL', ARGV[3] .. 'park:' .. rec[2]))
    else
      peerlease = leaseOf(ARGV[3], pnode)
    end
  elseif pr[1] and pr[1] ~= '' and pr[1] ~= ARGV[2] and left == '' then
    paired, pnode, pclient = '2', pr[1], pr[4] or ''
    peerlease = leaseOf(ARGV[3], pnode)
  else
    redis.call('HSET', KEYS[1], 'peer', '', 'pair', '0')
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'node', ARGV[2], 'name', ARGV[5])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('PERSIST', KEYS[1])
if rec[4] and redis.call('GET', ARGV[3] .. 'token:' .. rec[4]) == ARGV[1] then redis.call('PERSIST', ARGV[3] .. 'token:' .. rec[4]) end
for _, r in ipairs({rec[5] or '', rec[7] or ''}) do
  if r ~= '' and redis.call('GET', ARGV[3] .. 'resume:' .. r) == ARGV[1] then redis.call('PERSIST', ARGV[3] .. 'resume:' .. r) end
end
local out = {'ok', paired, rec[3] or '0', pnode, peerlease, pgen, pttl, left, pclient, rec[6] or ''}
for _, m in ipairs(q) do out[#out + 1] = m end
return out
`)

// appendParkedScript queues a run of messages for a parked session,
// as much of it as its queue can take, in order: the run's first
// message goes in the place index or not at all, and each one queued
// only after all before it. Each message is sealed for its place, so a
// run that does not start where the queue ends is refused whole (a
// later one of it must never take an earlier one's place).
// KEYS: park, queue, user. ARGV: gen, index, prefix, then for each
// message: cost, text length, sealed message.
// Returns {queued, answer...}: how many of the run were queued, and
// 'ok' when all were, or why the next was not: 'full', waiting, size;
// 'at', n (the queue holds n messages: seal the next for that place);
// 'stale' (parked again since, at another gen); 'moved', node, its
// lease; 'gone'.
var appendParkedScript = redis.NewScript(leaseOfLua + `
if redis.call('EXISTS', KEYS[1]) == 0 then
  local node = redis.call('HGET', KEYS[3], 'node')
  if node and node ~= '' then return {'0', 'moved', node, leaseOf(ARGV[3], node)} end
  if node then return {'0', 'stale'} end
  return {'0', 'gone'}
end
local p = redis.call('HMGET', KEYS[1], 'gen', 'n', 'cost', 'max', 'wait', 'size')
if p[1] ~= ARGV[1] then return {'0', 'stale'} end
if tonumber(p[2]) ~= tonumber(ARGV[2]) then return {'0', 'at', p[2]} end
local n, cost, limit, size = tonumber(p[2]), tonumber(p[3]), tonumber(p[4]), tonumber(p[6])
local queued, answer = 0, {'ok'}
for i = 4, #ARGV - 2, 3 do
  local c = tonumber(ARGV[i])
  if cost + c > limit then
    answer = {'full', tostring(tonumber(p[5]) + n), tostring(size)}
    break
  end
  redis.call('RPUSH', KEYS[2], ARGV[i + 2])
  n, cost, size, queued = n + 1, cost + c, size + tonumber(ARGV[i + 1]), queued + 1
end
if queued > 0 then
  redis.call('HSET', KEYS[1], 'n', n, 'cost', cost, 'size', size)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
local out = {tostring(queued)}
for _, v in ipairs(answer) do out[#out + 1] = v end
return out
`)

// releaseParkedScript records that a parked session's partner left its
// pairing, and how (left: the peer_left, sealed), for the node that
// takes the session up to tell its resume: with nobody to tell when its
// window ends, its keys now expire with the window, without grace.
// KEYS: user, park, queue. ARGV: hashed name, pair, prefix, grace in ms,
// left.
// Returns {'ok'}, {'moved', node, its lease} or {'gone'}.
var releaseParkedScript = redis.NewScript(parkLua + leaseOfLua + `
local rec = redis.call('HMGET', KEYS[1], 'node', 'pair', 'tok', 'rk', 'ru')
if not rec[1] then return {'gone'} end
if rec[1] ~= '' then return {'moved', rec[1], leaseOf(ARGV[3], rec[1])} end
if rec[2] == ARGV[2] then
  redis.call('HSET', KEYS[1], 'peer', '', 'pair', '0')
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'left', ARGV[5]) end
  local ttl = redis.call('PTTL', KEYS[2])
  local grace = tonumber(ARGV[4])
  if ttl > grace then expire(KEYS[1], KEYS[2], KEYS[3], ARGV[1], rec[3], rec[4], rec[5], ARGV[3], ttl - grace) end
end
return {'ok'}
`)

// expireParkedScript ends a parked session whose window ran out, if it
// is still parked as gen.
// KEYS: user, park, queue. ARGV: hashed name, gen, prefix.
// Returns 'expired', 'moved' or 'gone'.
var expireParkedScript = redis.NewScript(forgetLua + `
local rec = redis.call('HMGET', KEYS[1], 'node', 'tok', 'rk', 'ru')
if not rec[1] then return 'gone' end
if rec[1] ~= '' or redis.call('HGET', KEYS[2], 'gen') ~= ARGV[2] then return 'moved' end
forget(KEYS[1], ARGV[1], rec[2], rec[3], rec[4], ARGV[3])
redis.call('DEL', KEYS[2], KEYS[3])
return 'expired'
`)
