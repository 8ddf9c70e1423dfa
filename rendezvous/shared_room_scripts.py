"""The Lua scripts of the Redis pairing store: every decision is one atomic script.

Redis runs a script to completion before any other command, so "take the waiter under
this name if its replica is alive, else wait here" cannot interleave with another
replica's arrival: no waiter is ever handed to two newcomers.

Keys (``P`` is the prefix, ARGV[1] of every script; a standalone Redis, ElastiCache in
non-cluster mode or Valkey; Redis Cluster is not supported, the keys are not declared):

- ``P..'waiters'``: hash, pairing name ->
  ``replica|connection|ip|port|protocol|since|token|nat`` (nat: the NAT class the
  waiter's request reported, 0..3, :mod:`tcpunch.nathint`; entries of older replicas
  have no ``|nat``, read as 0)
- ``P..'perip'``: hash, client IP -> number of waiting entries (the per-IP cap)
- ``P..'t:'..token``: hash ``name``, ``replica``, ``conn`` (empty while nobody waits
  with it); expires ``grace`` after its waiter left, ``token_ttl`` after it began waiting
- ``P..'r:'..replica``: set of the names that replica holds waiters for (for reaping)
- ``P..'hb:'..replica``: the replica's heartbeat, expires unless refreshed
- ``P..'replicas'``: set of replica ids that have beaten at least once
- channel ``P..'ch:'..replica``: notices to the replica holding a waiter:
  ``P|conn|ip|port|protocol|nat`` (peer arrived; nat: the peer's NAT class),
  ``R|conn`` (displaced by the same
  token elsewhere), ``D|conn`` (removed by remove_pair/delete_pairs)
"""

from __future__ import annotations

_COMMON = r"""
local P = ARGV[1]
local function split(s)
  local out, start = {}, 1
  while true do
    local i = string.find(s, '|', start, true)
    if not i then out[#out + 1] = string.sub(s, start); return out end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end
-- fields of a waiter: 1 replica, 2 conn, 3 ip, 4 port, 5 protocol, 6 since, 7 token,
-- 8 nat (absent in entries of older replicas)
local function alive(replica)
  return redis.call('EXISTS', P .. 'hb:' .. replica) == 1
end
-- Remove waiter w (already split) under name. token: 'delete' forgets it (paired),
-- 'grace' keeps it for grace_ms so its client can resume, 'keep' leaves it alone.
local function drop(name, w, token, grace_ms)
  redis.call('HDEL', P .. 'waiters', name)
  redis.call('SREM', P .. 'r:' .. w[1], name)
  if redis.call('HINCRBY', P .. 'perip', w[3], -1) <= 0 then
    redis.call('HDEL', P .. 'perip', w[3])
  end
  if w[7] ~= '' and token ~= 'keep' then
    local tkey = P .. 't:' .. w[7]
    if token == 'delete' then
      redis.call('DEL', tkey)
    elseif redis.call('HGET', tkey, 'conn') == w[2]
        and redis.call('HGET', tkey, 'replica') == w[1] then
      redis.call('HSET', tkey, 'conn', '', 'replica', '')
      redis.call('PEXPIRE', tkey, grace_ms)
    end
  end
end
"""

# ARGV: P, name, replica, conn, ip, port, protocol, since, token, cap, fresh_token,
# grace_ms, token_ttl_ms, nat. Returns {'paired', packed_waiter, token}
# | {'waiting', token, replaced_replica, replaced_conn} | {'refused', reason, detail}.
ARRIVE = (
    _COMMON
    + r"""
local name, me, conn, ip, port, proto = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local since, token, cap, fresh = ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11]
local grace, ttl, nat = tonumber(ARGV[12]), tonumber(ARGV[13]), ARGV[14]
if not alive(me) then
  return {'refused', 'replica_not_live', 'this replica has no live heartbeat in Redis'}
end
local replaced_replica, replaced_conn = '', ''
if token ~= '' then
  local tkey = P .. 't:' .. token
  local tname = redis.call('HGET', tkey, 'name')
  if not tname then return {'refused', 'bad_token', 'unknown or expired'} end
  if tname ~= name then return {'refused', 'bad_token', 'belongs to another pairing name'} end
  if redis.call('HGET', tkey, 'conn') ~= '' then
    local packed = redis.call('HGET', P .. 'waiters', name)
    if packed then
      local w = split(packed)
      if w[7] == token then
        replaced_replica, replaced_conn = w[1], w[2]
        drop(name, w, 'keep', grace)
        if w[1] ~= me then redis.call('PUBLISH', P .. 'ch:' .. w[1], 'R|' .. w[2]) end
      end
    end
    redis.call('HSET', tkey, 'conn', '', 'replica', '')
  end
end
local packed = redis.call('HGET', P .. 'waiters', name)
if packed then
  local w = split(packed)
  local heard = 0
  if alive(w[1]) then
    local notice = 'P|' .. w[2] .. '|' .. ip .. '|' .. port .. '|' .. proto .. '|' .. nat
    heard = redis.call('PUBLISH', P .. 'ch:' .. w[1], notice)
  end
  if heard > 0 then
    drop(name, w, 'delete', grace)
    if token ~= '' then redis.call('DEL', P .. 't:' .. token) end
    return {'paired', packed, token}
  end
  -- its replica is dead or not listening: never hand it out, wait in its place
  drop(name, w, 'grace', grace)
end
if replaced_conn == '' then
  local count = tonumber(redis.call('HGET', P .. 'perip', ip) or '0')
  if count >= cap then return {'refused', 'per_ip_waiting_cap', tostring(count)} end
end
if proto == 'v2' then
  if token == '' then token = fresh end
else
  token = ''
end
local entry = table.concat({me, conn, ip, port, proto, since, token, nat}, '|')
redis.call('HSET', P .. 'waiters', name, entry)
redis.call('SADD', P .. 'r:' .. me, name)
redis.call('HINCRBY', P .. 'perip', ip, 1)
if token ~= '' then
  local tkey = P .. 't:' .. token
  redis.call('HSET', tkey, 'name', name, 'replica', me, 'conn', conn)
  redis.call('PEXPIRE', tkey, ttl)
end
return {'waiting', token, replaced_replica, replaced_conn}
"""
)

# ARGV: P, name, replica, conn, grace_ms. 1 when the entry was still this connection's.
LEAVE = (
    _COMMON
    + r"""
local name, me, conn = ARGV[2], ARGV[3], ARGV[4]
local packed = redis.call('HGET', P .. 'waiters', name)
if not packed then return 0 end
local w = split(packed)
if w[1] ~= me or w[2] ~= conn then return 0 end
drop(name, w, 'grace', tonumber(ARGV[5]))
return 1
"""
)

# ARGV: P, grace_ms, name or '' for every name. Returns how many entries were removed;
# each owner replica is told on its channel (it closes the connection).
REMOVE = (
    _COMMON
    + r"""
local names
if ARGV[3] ~= '' then names = {ARGV[3]} else names = redis.call('HKEYS', P .. 'waiters') end
local removed = 0
for _, name in ipairs(names) do
  local packed = redis.call('HGET', P .. 'waiters', name)
  if packed then
    local w = split(packed)
    drop(name, w, 'grace', tonumber(ARGV[2]))
    redis.call('PUBLISH', P .. 'ch:' .. w[1], 'D|' .. w[2])
    removed = removed + 1
  end
end
return removed
"""
)

# ARGV: P, replica, heartbeat_ttl_ms, grace_ms. Refreshes this replica's heartbeat and
# reaps the entries of every replica whose heartbeat is gone. When this replica's own
# heartbeat had lapsed, its old entries are reaped first (its clients were told they
# were lost) and the first value is 1. Returns {lapsed, reaped}.
BEAT = (
    _COMMON
    + r"""
local me, hb_ttl, grace = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local lapsed = 0
if not alive(me) then lapsed = 1 end
local reaped = 0
local replicas = redis.call('SMEMBERS', P .. 'replicas')
for _, replica in ipairs(replicas) do
  if not alive(replica) then
    for _, name in ipairs(redis.call('SMEMBERS', P .. 'r:' .. replica)) do
      local packed = redis.call('HGET', P .. 'waiters', name)
      if packed then
        local w = split(packed)
        if w[1] == replica then drop(name, w, 'grace', grace); reaped = reaped + 1 end
      end
    end
    redis.call('DEL', P .. 'r:' .. replica)
    redis.call('SREM', P .. 'replicas', replica)
  end
end
redis.call('SET', P .. 'hb:' .. me, '1', 'PX', hb_ttl)
redis.call('SADD', P .. 'replicas', me)
return {lapsed, reaped}
"""
)

# ARGV: P, replica, grace_ms. Stops this replica's heartbeat and hands its waiters' tokens to
# grace (a clean shutdown: other replicas need not wait for the heartbeat to expire).
RETIRE = (
    _COMMON
    + r"""
local me = ARGV[2]
redis.call('DEL', P .. 'hb:' .. me)
local n = 0
for _, name in ipairs(redis.call('SMEMBERS', P .. 'r:' .. me)) do
  local packed = redis.call('HGET', P .. 'waiters', name)
  if packed then
    local w = split(packed)
    if w[1] == me then drop(name, w, 'grace', tonumber(ARGV[3])); n = n + 1 end
  end
end
redis.call('DEL', P .. 'r:' .. me)
redis.call('SREM', P .. 'replicas', me)
return n
"""
)
