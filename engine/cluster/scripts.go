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

// loginScript claims a name and a token for a user of this node.
// KEYS: user, token, node's user set, node's lease.
// ARGV: sealed name, hashed name, hashed token, node, token tag.
var loginScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[4]) == 0 then return 'unavailable' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'name_taken' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'unavailable' end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'tok', ARGV[3], 'tag', ARGV[5], 'node', ARGV[4], 'peer', '', 'pair', '0')
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
return 'ok'
`)

// logoutScript frees a user's name and token, if they are still this
// node's user's.
// KEYS: user, token, node's user set. ARGV: hashed name, hashed token, node.
var logoutScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'tok', 'node')
if rec[1] == ARGV[2] and rec[2] == ARGV[3] then redis.call('DEL', KEYS[1]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('SREM', KEYS[3], ARGV[1])
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
// name, holder's node, pair id, holder's token tag, holder node's lease}.
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
local holder = redis.call('HMGET', hkey, 'name', 'node', 'peer', 'tag')
if not holder[1] or not holder[2] then return {'unknown_token'} end
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
return {'ok', hk, holder[1], holder[2], id, holder[4] or '', lease}
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
// a live node gave someone else meanwhile stays theirs.
// KEYS: user, token, node's user set.
// ARGV: sealed name, hashed name, hashed token, node, partner's hashed
// name, pair, prefix, token tag.
var registerScript = redis.NewScript(`
local owner = redis.call('HGET', KEYS[1], 'node')
if owner and owner ~= ARGV[4] and redis.call('EXISTS', ARGV[7] .. 'lease:' .. owner) == 1 then
  return 'name_taken'
end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'tok', ARGV[3], 'tag', ARGV[8], 'node', ARGV[4], 'peer', ARGV[5], 'pair', ARGV[6])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
return 'ok'
`)

// dropScript removes one user of this node that is no longer logged in.
// KEYS: user, node's user set. ARGV: hashed name, node, prefix.
var dropScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'tok', 'node')
if rec[2] == ARGV[2] then
  redis.call('DEL', KEYS[1])
  if rec[1] and redis.call('GET', ARGV[3] .. 'token:' .. rec[1]) == ARGV[1] then
    redis.call('DEL', ARGV[3] .. 'token:' .. rec[1])
  end
end
redis.call('SREM', KEYS[2], ARGV[1])
return 'ok'
`)

// reapScript removes up to a batch of a dead node's users: their names
// and tokens are freed, and a partner's record on another node is freed
// too (that node tells its user when it sees the lease gone). It returns
// how many it took, 0 when the node is gone entirely, -1 when the node
// is alive after all.
// KEYS: dead node's user set, its lease, the node set.
// ARGV: dead node, prefix, batch size.
var reapScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local keys = redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))
for _, k in ipairs(keys) do
  local ukey = ARGV[2] .. 'user:' .. k
  local rec = redis.call('HMGET', ukey, 'node', 'tok', 'peer', 'pair')
  if rec[1] == ARGV[1] then
    redis.call('DEL', ukey)
    if rec[2] and redis.call('GET', ARGV[2] .. 'token:' .. rec[2]) == k then
      redis.call('DEL', ARGV[2] .. 'token:' .. rec[2])
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
