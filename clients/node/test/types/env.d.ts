// env.d.ts - the three globals of Node.js that nats.js's types name,
// declared here so that tsc needs only the es2022 library (the DOM
// library triples its time; @types/node would be one more package).
declare class TextEncoder { encode(input?: string): Uint8Array; }
declare class TextDecoder { decode(input?: Uint8Array): string; }
declare class ReadableStream<R = unknown> { private readonly r?: R; }
declare const console: { log(...a: unknown[]): void; warn(...a: unknown[]): void };
