/**
 * Where the load generator puts its clients: the scale-out scenario's claims (channels local to
 * their node, a given share of each channel elsewhere, the same users on every node) rest on it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { placeClient, usersPerNode, type Layout } from '../loadgen/layout.js';

function channelsOf(total: number, layout: Layout, nodes: number): Map<string, number[]> {
  const channels = new Map<string, number[]>();
  for (let i = 0; i < total; i += 1) {
    const { channel, node } = placeClient(i, layout, nodes);
    channels.set(channel, [...(channels.get(channel) ?? []), node]);
  }
  return channels;
}

describe('client placement', () => {
  it('homed, local: every channel lives on one node, and every node holds the same users', () => {
    for (const nodes of [1, 2, 4, 8]) {
      const layout: Layout = { kind: 'homed', size: 10, crossFraction: 0 };
      const total = 1000 * nodes;
      for (const [channel, members] of channelsOf(total, layout, nodes)) {
        assert.equal(members.length, 10);
        assert.equal(new Set(members).size, 1, `${channel} on one node`);
      }
      assert.deepEqual(usersPerNode(total, layout, nodes), new Array(nodes).fill(1000));
    }
  });

  it('homed, cross: a tenth of each channel on another node, still the same users on every node', () => {
    for (const nodes of [2, 4, 8]) {
      const layout: Layout = { kind: 'homed', size: 10, crossFraction: 0.1 };
      const total = 1000 * nodes;
      for (const [channel, members] of channelsOf(total, layout, nodes)) {
        const home = Number(channel.slice(1)) % nodes;
        assert.equal(members.filter((n) => n !== home).length, 1, `${channel}: one member away from node ${home}`);
      }
      assert.deepEqual(usersPerNode(total, layout, nodes), new Array(nodes).fill(1000));
    }
    // A larger share spreads over the other nodes.
    const wide: Layout = { kind: 'homed', size: 10, crossFraction: 0.3 };
    const members = channelsOf(40, wide, 4).get('g0')!;
    assert.deepEqual([...new Set(members.filter((n) => n !== 0))].sort(), [1, 2, 3]);
  });

  it('homed on one node: everyone is local whatever the cross share', () => {
    assert.deepEqual(usersPerNode(100, { kind: 'homed', size: 10, crossFraction: 0.5 }, 1), [100]);
  });

  it('groups: consecutive users on consecutive nodes (unchanged)', () => {
    assert.deepEqual(
      [0, 1, 2, 3].map((i) => placeClient(i, { kind: 'groups', size: 10 }, 3)),
      [
        { channel: 'g0', node: 0 },
        { channel: 'g0', node: 1 },
        { channel: 'g0', node: 2 },
        { channel: 'g0', node: 0 },
      ],
    );
  });
});
