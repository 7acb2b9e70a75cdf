/**
 * Writes the generated schema documents into docs/schema/: the JSON Schema of every protocol
 * message and the OpenAPI 3.1 document of the HTTP API, both from the schemas in
 * packages/protocol/src/schema.ts. `npm run schema` runs it; a test fails while the committed
 * copies differ from what this would write.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { protocolJsonSchema } from '@presence/protocol/schema';
import { ROUTES } from '../src/http/api.js';
import { openApiDocument } from '../src/http/openapi.js';
import { REALTIME_PATH } from '../src/transport/websocket.js';

export const SCHEMA_DIR = fileURLToPath(new URL('../../../docs/schema/', import.meta.url));

/** The documents by file name, as they are written (two-space JSON, final newline). */
export function schemaDocuments(): Record<string, string> {
  const text = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;
  return {
    'protocol.schema.json': text(protocolJsonSchema()),
    'openapi.json': text(openApiDocument({ routes: ROUTES, realtimePath: REALTIME_PATH })),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  mkdirSync(SCHEMA_DIR, { recursive: true });
  for (const [name, text] of Object.entries(schemaDocuments())) {
    writeFileSync(new URL(name, pathToFileURL(SCHEMA_DIR)), text);
    console.log(`docs/schema/${name}: ${text.length} bytes`);
  }
}
