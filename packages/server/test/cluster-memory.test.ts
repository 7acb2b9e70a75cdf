import { MemoryHub, MemoryTransport } from '../src/broker/memory-transport.js';
import { describeClusterConformance } from './support/cluster-conformance.js';

describeClusterConformance({
  name: 'in-process hub',
  async create() {
    const hub = new MemoryHub();
    return {
      transport: () => new MemoryTransport(hub),
      goDown: async () => hub.goDown(),
      comeBackEmpty: async () => hub.comeBack({ empty: true }),
      keys: async () => hub.keys(),
      close: async () => {},
    };
  },
});
