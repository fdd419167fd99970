// wshost.d.ts: the types of wshost.js (npm "wshost-client"; served at /_/client.js).

/** A WebSocket constructor: globalThis.WebSocket, or the `ws` package in Node 20. */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[]): WebSocketLike;
}

/** What the client uses of a WebSocket. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  send(data: string | ArrayBuffer | ArrayBufferView | Blob): void;
  close(code?: number, reason?: string): void;
}

/** Where the identity ({user_id, token}) is kept between connections. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** A JWT, or a function (may be async) called before every (re)connect to get a fresh one. */
export type TokenSource =
  | string
  | (() => string | null | undefined | Promise<string | null | undefined>);

export interface ConnectOptions {
  /** Default globalThis.WebSocket; required in Node 20 (`import { WebSocket } from "ws"`). */
  WebSocket?: WebSocketConstructor;
  /** Sent as ?access_token=. A close 4401 calls a function again; a string stops there. */
  token?: TokenSource;
  /** Default localStorage, else sessionStorage, else memory (null: memory). */
  storage?: StorageLike | null;
  /** The storage key (default "wshost"). */
  storageKey?: string;
  /** First reconnect delay, ms (default 250). */
  minDelayMs?: number;
  /** Reconnect delay cap, ms (default 30000). */
  maxDelayMs?: number;
  /** After a drain's "shutdown; reconnect", the return is spread over this many ms (5000). */
  shutdownSpreadMs?: number;
  /** Sec-WebSocket-Protocol offer. */
  protocols?: string | string[];
  /** Open once the first message came or this many ms passed without a close (100). */
  settleMs?: number;
  /** Messages kept while disconnected (default 1000); send() returns false past it. */
  maxPending?: number;
  /** Reads the greeting that tells the client who it is; {user_id, token} or null. */
  identity?: (data: any) => { user_id: string; token?: string | null } | null;
}

export interface OpenEvent {
  /** The stored user id, or null before the first greeting (see the identity event). */
  user_id: string | null;
  /** The session (null: the host speaks no session protocol to this client). */
  session_id: string | null;
  /** A session came back (false without a session). */
  resumed: boolean;
  /** Frames replayed on resume (0 without a session). */
  replayed: number;
}

export interface IdentityEvent {
  /** Who the server says this client is: from the greeting, on every connection. */
  user_id: string;
}

export interface MessageMeta {
  /** The frame's sequence number in its session (null without a session). */
  seq: number | null;
}

export interface CloseEvent {
  /** 4401: token refused; 4403: refused by the server; 4001: do not reconnect; 1001: drain. */
  code: number;
  reason: string;
  /** false: the client stopped (close(), 4403, 4001, "; no-reconnect", 4401 with a string). */
  willReconnect: boolean;
}

export interface EventMap {
  open: (ev: OpenEvent) => void;
  identity: (ev: IdentityEvent) => void;
  message: (data: string | ArrayBuffer, meta: MessageMeta) => void;
  close: (ev: CloseEvent) => void;
}

export interface Connection {
  on<K extends keyof EventMap>(name: K, fn: EventMap[K]): Connection;
  /** Sends now, or keeps it for the next connection; false when maxPending are kept. */
  send(data: string | ArrayBuffer | ArrayBufferView | Blob): boolean;
  /** Closes and stops reconnecting. */
  close(code?: number, reason?: string): void;
  readonly userId: string | null;
  readonly connected: boolean;
}

export function connect(url: string, options?: ConnectOptions): Connection;
