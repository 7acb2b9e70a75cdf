/** Clients, observers and the like that a test file opened, closed together after its last test. */
export function tracker(): { track<T extends { close(): unknown }>(thing: T): T; closeAll(): Promise<void> } {
  const open: { close(): unknown }[] = [];
  return {
    track(thing) {
      open.push(thing);
      return thing;
    },
    async closeAll() {
      for (const thing of open.splice(0)) await thing.close();
    },
  };
}
