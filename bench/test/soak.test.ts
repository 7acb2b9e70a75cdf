/**
 * The short soak: two nodes and a redis-server, a few hundred real WebSocket clients churning for
 * 12 s (connects, joins, leaves, status and meta changes, typing, watches, clean and abrupt closes,
 * logouts, resumes on the same and the other node), then every client goes. Once the offline delay
 * has passed, nothing may be left: no session, channel, online user, typing entry, watch or armed
 * timer on either node, and in Redis only user records and the live nodes' (empty) session hashes.
 * Memory and lag are not asserted here: this machine is shared; the 60-minute run is in docs/soak.md.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runSoak, soakDefaults, type SoakResult } from '../soak/soak.js';

describe('soak (short)', () => {
  let result: SoakResult;

  it('churns for 12 s and leaves nothing behind', { timeout: 120_000 }, async () => {
    const options = { ...soakDefaults(12_000, 300), nodes: 2 as const, pin: false, sampleMs: 3_000 };
    // More turnover than the long run's defaults, so every way of leaving happens many times.
    options.disconnectsPerSecond = 15;
    options.commandsPerSecond = 120;
    result = await runSoak(options);

    assert.ok(result.samples.length >= 4, `${result.samples.length} samples`);
    const churn = result.churn;
    // Counts depend on how much CPU this shared machine leaves us; that each kind happened is what matters.
    assert.ok(churn.opened > 0, 'no connection opened');
    for (const counter of ['closedClean', 'closedAbrupt', 'loggedOut', 'resumed', 'moved', 'commands'] as const) {
      assert.ok(churn[counter] > 0, `no ${counter} in ${JSON.stringify(churn)}`);
    }
    // The churn only sends valid commands; the one error it may meet is the server shedding new
    // connections while this shared machine starves it (OVERLOADED, then close 1013).
    const errors = Object.keys(result.errorCodes).filter((code) => !code.startsWith('close:') && code !== 'OVERLOADED');
    assert.deepEqual(errors, [], `error frames: ${JSON.stringify(result.errorCodes)}`);
    assert.equal(churn.connected, 0);

    assert.deepEqual(result.leftovers.problems, []);
    for (const node of result.leftovers.nodes) {
      const { connections, sessions, onlineUsers, channels } = node.stats;
      assert.deepEqual({ connections, sessions, onlineUsers, channels }, { connections: 0, sessions: 0, onlineUsers: 0, channels: 0 }, node.node);
      for (const [name, value] of Object.entries(node.inspect)) if (typeof value === 'number') assert.equal(value, 0, `${node.node}: ${name}`);
      assert.equal(node.engineTimers, 0, `${node.node}: armed timers`);
      assert.equal(node.cluster?.pendingWrites, 0, `${node.node}: cluster writes in flight`);
    }
    const redis = result.leftovers.redis!;
    assert.equal(redis.sessionFields, 0);
    assert.deepEqual(redis.strayKeys, []);
    assert.equal(redis.liveNodeKeys, 2);
    assert.ok(redis.userRecords > 0 && redis.userRecords <= options.users, `${redis.userRecords} user records`);
    // Besides: the registry and the nodes' counts beside it.
    assert.equal(redis.keys, redis.userRecords + redis.liveNodeKeys + 2);
    assert.equal(result.clean, true);
  });
});
