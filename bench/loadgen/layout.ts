/**
 * Where each bench client goes: its channel and the node (index into the server URLs) it connects
 * to. Shared by the load generator, which places the clients, and the scenarios, which need to
 * know how many users each node holds.
 */

/**
 * Channels of `size` consecutive users, or one channel for everyone (joined quietly when `quiet`).
 * `homed`: channels of `size` too, but each channel has a home node (channel k on node k mod N)
 * where its members connect, except `crossFraction` of them (rounded), who connect to the next
 * nodes; every node gets the same number of users when it is home to as many channels as the others.
 */
export type Layout =
  | { kind: 'groups'; size: number }
  | { kind: 'single'; channel: string; quiet?: boolean }
  | { kind: 'homed'; size: number; crossFraction: number };

export function placeClient(index: number, layout: Layout, nodes: number): { channel: string; node: number } {
  switch (layout.kind) {
    case 'homed': {
      const group = Math.floor(index / layout.size);
      const home = group % nodes;
      const away = nodes > 1 ? Math.round(layout.size * layout.crossFraction) : 0;
      const member = index % layout.size;
      return { channel: `g${group}`, node: member < away ? (home + 1 + (member % (nodes - 1))) % nodes : home };
    }
    case 'groups':
      // Consecutive users go to consecutive nodes: every channel's members are split across the
      // nodes and every node gets the same share. (Member k of each channel on node k mod N
      // was not even when N does not divide the channel size: 4 of 10 on the first of 3 nodes,
      // 20,000 of 50,000, past one process's open-files limit.)
      return { channel: `g${Math.floor(index / layout.size)}`, node: index % nodes };
    case 'single':
      return { channel: layout.channel, node: index % nodes };
  }
}

/** Users per node of a population of `total` clients. */
export function usersPerNode(total: number, layout: Layout, nodes: number): number[] {
  const counts = new Array<number>(nodes).fill(0);
  for (let i = 0; i < total; i += 1) counts[placeClient(i, layout, nodes).node] += 1;
  return counts;
}
