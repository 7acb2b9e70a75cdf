import type { ServerMessage } from '@presence/protocol';

/**
 * The part of the WebSocket API the client uses. The browser's `WebSocket` and the `ws` package's
 * class both fit it. Handler parameters are typed `never` on purpose: any event type is accepted
 * from the implementation, and the client reads events through the narrow shapes below.
 */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: never) => void) | null;
  onmessage: ((event: never) => void) | null;
  onclose: ((event: never) => void) | null;
  onerror: ((event: never) => void) | null;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What the client reads from a message event. */
export interface MessageEventLike {
  data: unknown;
}

/** What the client reads from a close event. */
export interface CloseEventLike {
  code: number;
  reason: string;
}

/** `readyState` values of the WebSocket standard. */
export const READY_STATE = { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 } as const;

let decoder: TextDecoder | undefined;

/**
 * One frame from the server as a list of messages: the server may coalesce several messages
 * into one JSON array. Returns undefined for anything that is not protocol JSON.
 */
export function decodeFrame(data: unknown): ServerMessage[] | undefined {
  let text: string;
  if (typeof data === 'string') {
    text = data;
  } else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) {
    // Text frames arrive as strings in browsers; some Node implementations hand over bytes.
    decoder ??= new TextDecoder();
    text = decoder.decode(data as ArrayBuffer | ArrayBufferView);
  } else {
    return undefined;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  const list = Array.isArray(parsed) ? parsed : [parsed];
  for (const item of list) {
    if (typeof item !== 'object' || item === null || typeof (item as { type?: unknown }).type !== 'string') return undefined;
  }
  return list as ServerMessage[];
}
